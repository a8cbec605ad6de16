"""`--model selfcorrect`: lm-eval's HF model answering every generate_until request with K attempts.

Attempt 1 is exactly what `--model hf` generates for the request. Attempt k+1 answers
[prompt, attempt 1, user: instruction, ..., attempt k, user: instruction]; the last attempt is what
lm-eval scores. The instruction is the `instruction` model arg when given, else, as in `harness eval
--method base`, the correction instruction of the harness task a `selfcorrect_<task>` request comes
from (code wording on `selfcorrect_humaneval`), else SCoRe's (any other lm-eval task).
Every attempt gets its next turn with no verifier signal: this is the intrinsic protocol (`harness eval
--feedback none`). lm-eval grades only after generation, so `--feedback oracle` has no counterpart here.

With `--apply_chat_template` the conversation is the one lm-eval built: lm-eval renders each request
through `apply_chat_template`, which we remember, so later attempts extend that very message list and
are rendered by the tokenizer's chat template (a `gen_prefix` is repeated at the start of each
attempt). Without it, the prompt is plain text and so is the continuation:
`context + attempt + "\\n\\n" + instruction + "\\n\\n"`. Log-likelihood requests are left to HFLM.

Model args besides HFLM's: `turns` (K, default 2), `instruction` (the text between attempts) and
`attempts_file` (a JSONL file that gets one line per request: its prompts and all its attempts).

Greedy requests of a causal model run through the harness's decode engine (harness.rollout.engine),
all K attempts in one stream: continuous batching, stop strings checked per row as lm-eval does, and
attempt k+1 prefills only what its prompt adds to attempt k's. Rows: `batch_size` when above 1, else
as many as free memory allows. Sampled requests (do_sample) keep HFLM's own `generate`, so the
checkpoint's sampling defaults apply exactly as under `--model hf`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from lm_eval.api.model import CacheHook
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from harness.lmeval import MODEL_NAME
from harness.prompts import SCORE_CORRECTION
from harness.task import TASKS

PREFIX = "selfcorrect_"  # our lm-eval tasks: selfcorrect_<harness task>

logger = logging.getLogger(__name__)


class _Request:
    """What HFLM.generate_until reads from an lm-eval Instance: `.args = (context, gen_kwargs)`."""

    def __init__(self, context: str, gen_kwargs: dict[str, Any]):
        self.args = (context, gen_kwargs)


@register_model(MODEL_NAME)
class SelfCorrectLM(HFLM):
    def __init__(self, pretrained: Any = None, turns: int = 2, instruction: str | None = None,
                 attempts_file: str | None = None, **kwargs: Any) -> None:
        turns = int(turns)
        if turns < 1:
            raise ValueError(f"turns must be >= 1, got {turns}")
        super().__init__(pretrained=pretrained, **kwargs)
        self.turns = turns
        self.instruction = instruction  # None: each request's task's (see instruction_for)
        self.attempts_file = Path(attempts_file) if attempts_file else None
        self.attempt_log: list[dict[str, Any]] = []  # per request: context, prompts, attempts
        self._chats: dict[str, tuple[list[dict[str, str]], bool]] = {}  # rendered prompt -> (messages, gen prompt?)
        self._warned_plain = False

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        rendered = super().apply_chat_template(chat_history, add_generation_prompt)
        self._chats[rendered] = ([dict(m) for m in chat_history], add_generation_prompt)
        return rendered

    def instruction_for(self, request: Any) -> str:
        """The text between attempts of an lm-eval request: the `instruction` model arg, else the correction
        instruction of the harness task of a `selfcorrect_<task>` request, else SCoRe's."""
        if self.instruction:
            return self.instruction
        name = str(getattr(request, "task_name", None) or "")
        if name.startswith(PREFIX) and name[len(PREFIX):] in TASKS.names():
            return TASKS.get(name[len(PREFIX):]).correction_instruction or SCORE_CORRECTION
        return SCORE_CORRECTION

    def next_prompt(self, context: str, attempts: list[str], instruction: str | None = None) -> str:
        """The prompt of attempt len(attempts) + 1 for a request whose prompt was `context`, with
        `instruction` between attempts (None: the `instruction` model arg, else SCoRe's)."""
        instruction = instruction or self.instruction or SCORE_CORRECTION
        chat = self._chats.get(context)
        if chat is None:
            if not self._warned_plain:
                logger.warning("selfcorrect: prompts are plain text (no --apply_chat_template); later attempts "
                               "continue the text. Chat models want --apply_chat_template.")
                self._warned_plain = True
            return context + "".join(f"{attempt}\n\n{instruction}\n\n" for attempt in attempts)
        history, add_generation_prompt = chat
        messages = copy.deepcopy(history)
        prefix = ""
        if not add_generation_prompt and messages and messages[-1]["role"] == "assistant":
            prefix = messages.pop()["content"]  # a gen_prefix that starts every attempt
        for attempt in attempts:
            messages += [{"role": "assistant", "content": prefix + attempt},
                         {"role": "user", "content": instruction}]
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
        return HFLM.apply_chat_template(self, messages, add_generation_prompt=not prefix)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        contexts = [req.args[0] for req in requests]
        gen_kwargs = [req.args[1] for req in requests]
        instructions = [self.instruction_for(req) for req in requests]
        records = [{"context": c, "prompts": [], "attempts": []} for c in contexts]
        prompts = list(contexts)
        outer_hook, self.cache_hook = self.cache_hook, CacheHook(None)  # cache final answers only
        try:
            greedy = [i for i, g in enumerate(gen_kwargs) if self._engine_can_run(g)]
            if greedy:
                self._engine_turns([records[i] for i in greedy], [gen_kwargs[i] for i in greedy],
                                   [instructions[i] for i in greedy])
            rest = [i for i in range(len(records)) if i not in set(greedy)]
            for turn in range(self.turns if rest else 0):
                batch = [_Request(prompts[i], copy.deepcopy(gen_kwargs[i])) for i in rest]
                outputs = super().generate_until(batch, disable_tqdm=disable_tqdm)
                for i, output in zip(rest, outputs):
                    records[i]["prompts"].append(prompts[i])
                    records[i]["attempts"].append(output)
                if turn + 1 < self.turns:
                    prompts = [self.next_prompt(r["context"], r["attempts"], ins) for r, ins in zip(records, instructions)]
        finally:
            self.cache_hook = outer_hook
        for context, kwargs, record in zip(contexts, gen_kwargs, records):
            self.cache_hook.add_partial("generate_until", (context, kwargs), record["attempts"][-1])
        self.attempt_log.extend(records)
        if self.attempts_file is not None:
            self.attempts_file.parent.mkdir(parents=True, exist_ok=True)
            with self.attempts_file.open("a", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return [record["attempts"][-1] for record in records]

    # ---- the decode engine ---------------------------------------------------------------------
    def _engine_can_run(self, gen_kwargs: dict[str, Any]) -> bool:
        from lm_eval.models.utils import normalize_gen_kwargs

        kwargs = normalize_gen_kwargs(copy.deepcopy(gen_kwargs), self.max_gen_toks)
        return self.backend == "causal" and self.think_end_token is None and not kwargs.get("do_sample")

    def _engine_turns(self, records: list[dict[str, Any]], gen_kwargs: list[dict[str, Any]],
                      instructions: list[str]) -> None:
        """All K greedy attempts of these requests in one engine stream; fills each record's prompts
        and attempts exactly as the HFLM path does."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        from harness.rollout import EngineGenerator
        from harness.rollout.engine import Job
        from harness.sampling import SamplingParams

        if getattr(self, "_engine", None) is None:
            rows = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 1 else None
            self._engine = EngineGenerator(self.model, self.tokenizer, rows)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(gen_kwargs):  # one engine run per distinct set of generation settings
            groups.setdefault(json.dumps(g, sort_keys=True, default=str), []).append(i)
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(copy.deepcopy(gen_kwargs[indices[0]]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            stop = _StopStrings(self.tokenizer, until)

            def job(i: int) -> Job:
                record = records[i]
                prompt = record["context"] if not record["attempts"] else \
                    self.next_prompt(record["context"], record["attempts"], instructions[i])
                record["prompts"].append(prompt)
                return Job(i, self.tok_encode(prompt, left_truncate_len=self.max_length - max_gen), [0], stop)

            def done(i: int, completions, seconds: float) -> list[Job]:
                text = self.tok_decode(list(completions[0].token_ids))
                records[i]["attempts"].append(postprocess_generated_text(generation=text, stop=until, think_end_token=None))
                return [job(i)] if len(records[i]["attempts"]) < self.turns else []

            self._engine.stream([job(i) for i in indices], SamplingParams(max_new_tokens=max_gen), done)


class _StopStrings:
    """True once the decoded tail of a row holds a stop string (lm-eval's MultiTokenEOSCriteria test)."""

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.window = max((len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stops), default=0) + 2

    def __call__(self, tokens: list[int]) -> bool:
        if not self.stops:
            return False
        tail = self.tokenizer.decode(tokens[-self.window:])
        return any(s in tail for s in self.stops)
