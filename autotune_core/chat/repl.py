"""The ``autotune chat`` loop: read a line, stream the answer, print the status line, save the transcript.

Input: prompt_toolkit where stdin is a terminal (line editing, history across sessions, Esc+Enter or
Alt+Enter for a new line), plain lines otherwise (so ``echo hi | autotune chat`` works). Ctrl-C during an
answer stops that answer (the stream is closed, which cancels the upstream request); at the prompt it
clears the line; Ctrl-D or /quit leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from ..config import data_dir
from ..errors import AutotuneError
from ..messages import ChatRequest
from ..profiles import PROFILES
from .commands import COMMANDS
from .engine import ChatEngine, is_base_model
from .history import ChatStore, Conversation, Turn
from .render import AnswerWriter

BASE_MODEL_NOTE = (
    "note: {model} is a base model (it continues text; it does not follow chat turns), so its "
    "answers will look odd. It is here to try autotune offline; for real chat use a chat model "
    "from Ollama or another server (--model NAME)."
)


@dataclass
class ChatApp:
    engine: ChatEngine
    console: Console
    model: str
    profile: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    markdown: bool = True
    store: ChatStore = field(default_factory=ChatStore)
    conv: Conversation = field(default_factory=Conversation)
    backend: str = ""
    running: bool = True
    #: where notes, banner and status lines go (stderr for a one-shot prompt, so stdout is only the answer)
    info: Console | None = None

    # -- output -----------------------------------------------------------------------------------------

    def say(self, text: str, style: str = "dim") -> None:
        (self.info or self.console).print(escape(text), style=style, soft_wrap=True)

    async def banner(self) -> None:
        self.backend = await self.engine.backend_of(self.model)
        self.say(
            f"autotune chat · {self.model} on {self.backend} ({self.engine.label}) · profile "
            f"{self.profile or 'default'} · conversation {self.conv.id}",
            "bold",
        )
        if self.conv.turns:
            self.say(f"resumed: {len(self.conv.turns)} messages so far ({self.conv.title})")
        if is_base_model(self.backend, self.model):
            self.say(BASE_MODEL_NOTE.format(model=self.model), "yellow")
        self.say("/help for commands · Ctrl-C stops an answer · Ctrl-D or /quit to leave")

    # -- conversation --------------------------------------------------------------------------------------

    def new_conversation(self) -> None:
        self.conv = Conversation(model=self.model, profile=self.profile, system=self.system)

    def resume(self, conv: Conversation) -> None:
        self.conv = conv
        self.model = conv.model or self.model
        self.profile = conv.profile or self.profile
        self.system = conv.system

    def save(self) -> None:
        if self.conv.turns:
            try:
                self.store.save(self.conv)
            except OSError as exc:
                self.say(f"could not save the conversation: {exc}", "red")

    async def ask(self, text: str) -> None:
        """One user turn: stream the answer; Ctrl-C cancels only this task."""
        self.conv.model, self.conv.profile, self.conv.system = self.model, self.profile, self.system
        self.conv.turns.append(Turn(role="user", content=text))
        request = ChatRequest(
            model=self.model,
            messages=self.conv.messages(),
            stream=True,
            max_tokens=self.max_tokens,
            profile=self.profile,
            conversation_id=self.conv.id,
        )
        writer = AnswerWriter(self.console, self.markdown)
        task = asyncio.ensure_future(self._answer(request, writer))
        loop = asyncio.get_running_loop()
        installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            installed = True
        error: BaseException | None = None
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        except AutotuneError as exc:
            error = exc
        except Exception as exc:  # a broken connection must not end the session
            error = exc
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)
        stats = self.engine.last
        interrupted = task.cancelled()
        if writer.text or interrupted:
            self.conv.turns.append(
                Turn(
                    role="assistant",
                    content=writer.text,
                    interrupted=interrupted,
                    stats=stats.as_dict() if stats is not None else None,
                )
            )
        if interrupted:
            self.say("[stopped]", "yellow")
        if error is not None:
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.say(f"error: {message}", "red")
            if not writer.text:
                self.conv.turns.pop()  # the question got no answer: do not keep it in the context
        elif stats is not None:
            self.say(stats.line(), "cyan")
            for note in stats.notes[:4]:
                self.say(f"↳ {note}", "magenta")
        self.save()

    async def _answer(self, request: ChatRequest, writer: AnswerWriter) -> None:
        with writer:
            async for piece in self.engine.stream(request):
                writer.feed(piece)

    # -- input --------------------------------------------------------------------------------------------

    async def handle(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if text.startswith("/") and not text.startswith("//"):
            name, _, arg = text[1:].partition(" ")
            command = COMMANDS.get(name.lower())
            if command is None:
                self.say(f"unknown command /{name}; /help lists them", "red")
                return
            await command(self, arg.strip())
            return
        await self.ask(text[1:] if text.startswith("//") else text)

    def set_profile(self, name: str) -> bool:
        if name not in PROFILES:
            self.say(f"unknown profile {name!r}; one of {', '.join(PROFILES)}", "red")
            return False
        self.profile = name
        return True


def _reader(app: ChatApp) -> Callable[[], Awaitable[str]]:
    """An awaitable line reader: prompt_toolkit on a terminal, plain lines otherwise (EOFError at the end)."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _newline(event: object) -> None:
            event.current_buffer.insert_text("\n")  # type: ignore[attr-defined]

        try:
            data_dir().mkdir(parents=True, exist_ok=True)
            history: FileHistory | InMemoryHistory = FileHistory(str(data_dir() / "chat_input_history"))
        except OSError:
            history = InMemoryHistory()
        session: PromptSession[str] = PromptSession(history=history, key_bindings=bindings)

        async def read_tty() -> str:
            return str(await session.prompt_async(">>> "))

        return read_tty

    async def read_pipe() -> str:
        line = str(await asyncio.to_thread(sys.stdin.readline))
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read_pipe


async def run_chat(app: ChatApp, prompt: str | None = None) -> None:
    """The loop (or one answer to ``prompt``, as ``ollama run MODEL PROMPT``); the engine is started and closed here."""
    await app.engine.start()
    try:
        if not app.model:
            app.model = await app.engine.default_model()
        app.conv.model = app.conv.model or app.model
        await app.banner()
        if prompt is not None:
            await app.ask(prompt)
            return
        read = _reader(app)
        while app.running:
            try:
                line = await read()
            except KeyboardInterrupt:
                app.say("(Ctrl-D or /quit to leave)")
                continue
            except EOFError:
                break
            await app.handle(line)
    finally:
        app.save()
        if app.conv.turns:
            app.say(f"saved; continue with: autotune chat --resume {app.conv.id}")
        await app.engine.close()
