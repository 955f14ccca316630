# Hand-written module (not generated from a notebook).
"""``spongebob chat``: multi-turn chat with streaming, history that fits the context, and the
reasoning of an R1-style reply shown apart from its answer."""

from __future__ import annotations

import argparse
import sys

from spongebob.cli.checkpoints import chat_tokenizer, load_model_checkpoint, model_args
from spongebob.cli.common import CliError, add_device_arg, device_arg


class TemplatePrompts:
    """Prompts rendered by a foreign tokenizer folder's own chat template, tokenized as
    `transformers` does (special tokens parsed); ``encode`` returns ``(ids, None)`` like
    `ChatEncoder`'s. For templates in another format than the course's (``course_format`` False);
    ``system_prompt`` becomes a leading system message."""

    def __init__(self, tokenizer, system_prompt: str | None = None) -> None:
        self.tokenizer, self.system_prompt = tokenizer, system_prompt

    def encode(self, messages: list[dict]) -> tuple[list[int], None]:
        msgs = list(messages)
        if self.system_prompt is not None:
            msgs = [{"role": "system", "content": self.system_prompt}, *msgs]
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
        return self.tokenizer.encode(text), None


def prompt_encoder(tokenizer, system_prompt: str | None = None):
    """`ChatEncoder` for the course format (our folders, and foreign templates that render it, with
    their own default system prompt); `TemplatePrompts` for a template in another format."""
    from spongebob.data import ChatEncoder

    if tokenizer.course_format:
        return ChatEncoder(tokenizer, system_prompt)
    return TemplatePrompts(tokenizer, system_prompt)


def fit_history(encoder, history: list[dict], budget: int) -> tuple[list[dict], list[int], int]:
    """Drop the oldest whole exchanges until the prompt fits ``budget`` tokens.

    Returns ``(kept messages, prompt ids, exchanges dropped)``; the last user turn is always
    kept, and raises ``ValueError`` when it alone does not fit. Turns are dropped in pairs (a
    user turn with its reply), never cut, so no token is split.
    """
    msgs, dropped = list(history), 0
    while True:
        ids, _ = encoder.encode(msgs)
        if len(ids) <= budget:
            return msgs, ids, dropped
        if len(msgs) <= 1:
            raise ValueError(f"this message alone is {len(ids)} tokens; the context leaves "
                             f"{budget} for the prompt (shorten it or lower --max-new-tokens)")  # fmt: skip
        msgs, dropped = msgs[2:], dropped + 1


class ReasoningSplitter:
    """Split streamed text into ``("think", text)`` and ``("answer", text)`` parts, tags removed.

    Works on text pieces, so a tag split over several pieces (the original's tokenizer spells
    ``<think>`` with several tokens) is still found: a tail that could start a tag is held back.
    """

    TAGS = {"<think>": "think", "</think>": "answer", "<answer>": None, "</answer>": None}

    def __init__(self) -> None:
        self.mode, self.buf = "answer", ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.buf += piece
        out: list[tuple[str, str]] = []
        while self.buf:
            i = self.buf.find("<")
            if i < 0:
                out.append((self.mode, self.buf))
                self.buf = ""
                break
            if i:
                out.append((self.mode, self.buf[:i]))
                self.buf = self.buf[i:]
            tag = next((t for t in self.TAGS if self.buf.startswith(t)), None)
            if tag is not None:
                self.mode = self.TAGS[tag] or self.mode
                self.buf = self.buf[len(tag) :]
            elif any(t.startswith(self.buf) for t in self.TAGS):
                break  # maybe the start of a tag: wait for more text
            else:
                out.append((self.mode, "<"))
                self.buf = self.buf[1:]
        return [(k, t) for k, t in out if t]

    def flush(self) -> list[tuple[str, str]]:
        rest, self.buf = self.buf, ""
        return [(self.mode, rest)] if rest else []


def _sampling(args: argparse.Namespace) -> dict:
    kw = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
          "repetition_penalty": args.repetition_penalty}  # fmt: skip
    if args.seed is not None:
        kw["seed"] = args.seed
    return kw


def _reply(model, tok, encoder, history, args, show) -> str:
    """Generate one reply to ``history``, passing ``(kind, text)`` parts to ``show`` as they come;
    returns the answer text (reasoning removed)."""
    from spongebob.generate import stream_generate
    from spongebob.tokenizer import StreamDecoder

    budget = model.config.max_seq_len - args.max_new_tokens
    kept, ids, dropped = fit_history(encoder, history, budget)
    if dropped:
        del history[: len(history) - len(kept)]  # the context forgets the oldest exchanges
        show("note", f"[{dropped} oldest exchange(s) dropped to fit the context]\n")
    decoder, splitter, answer = StreamDecoder(tok), ReasoningSplitter(), []
    kw = dict(eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **_sampling(args))
    for token in stream_generate(model, ids, args.max_new_tokens, **kw):
        if token == tok.eos_id:
            break
        for kind, text in splitter.feed(decoder.put(token)):
            answer += [text] if kind == "answer" else []
            show(kind, text)
    for kind, text in splitter.feed(decoder.flush()) + splitter.flush():
        answer += [text] if kind == "answer" else []
        show(kind, text)
    return "".join(answer).strip()


def _chat(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    device = device_arg(args)
    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads,
                                          log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    tok = chat_tokenizer(args, model, extras)
    model.to(device)
    encoder = prompt_encoder(tok, args.system)
    if args.prompt is not None:
        reply = _reply(model, tok, encoder, [{"role": "user", "content": args.prompt}], args,
                       show=lambda kind, text: None)  # fmt: skip
        print(reply)
        return 0
    tty = sys.stdout.isatty()
    grey = (lambda s: f"\033[2m{s}\033[0m") if tty else (lambda s: s)
    stage = extras.get("stage", "a bare state dict")
    print(f"chatting with {args.checkpoint.name} ({stage}); /clear forgets, /quit leaves")
    state = {"kind": None}

    def show(kind: str, piece: str) -> None:
        if kind != state["kind"]:
            print("\n" if state["kind"] else "", end="")
            print({"think": grey("thinking> "), "answer": "bot> ", "note": ""}[kind], end="")
            state["kind"] = kind
        print(grey(piece) if kind in ("think", "note") else piece, end="", flush=True)

    history: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        text = line.strip()
        if text in ("/quit", "/exit"):
            return 0
        if text == "/clear":
            history.clear()
            print("(history cleared)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        state["kind"] = None
        try:
            reply = _reply(model, tok, encoder, history, args, show)
        except ValueError as e:
            history.pop()
            print(f"(not sent: {e})")
            continue
        except KeyboardInterrupt:
            reply = "(interrupted)"
        print("bot> " if state["kind"] is None else "")
        history.append({"role": "assistant", "content": reply})


def add_parsers(groups) -> None:
    ch = groups.add_parser("chat", help="chat with a checkpoint (multi-turn, streaming)")
    model_args(ch)
    ch.add_argument("--prompt", default=None, help="answer this once, print only the answer")
    ch.add_argument("--system", default=None, help="system prompt (default: the tokenizer's)")
    ch.add_argument("--temperature", type=float, default=0.85, help="0 = greedy (default 0.85)")
    ch.add_argument("--top-p", type=float, default=0.85, help="nucleus sampling (default 0.85)")
    ch.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens")
    ch.add_argument("--repetition-penalty", type=float, default=1.3, help="default 1.3")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="reply length cap")
    ch.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    add_device_arg(ch)
    ch.set_defaults(func=_chat)
