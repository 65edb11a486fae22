"""``autotune proof``: the default stack against autotune with every optimization off (and the server direct),
paired, interleaved, warmed alike, with bootstrap confidence intervals. Modules: scenarios (what is asked),
arms (who is asked), runner (the interleaved loop), sysmon (server memory), stats, analysis, report."""
