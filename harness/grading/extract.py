"""Finding the final answer inside a model's free text. Pure string work: no parsing, no eval.

What these helpers do only ever NARROWS the text a grader reads (issue 10): `answer_region` cuts a
response to its last attempt (chat-template debris and a hallucinated next problem go), and
`final_answer_statement` picks the last SCoRe statement "The final answer is X". How X is read stays
the graders' business (math-verify for MATH, one clean number for GSM8K).
"""

from __future__ import annotations

import re

# SCoRe's answer format: "Final Answer: The final answer is X. I hope it is correct."
_FINAL_ANSWER = re.compile(
    r"final answer is[: \t]*([^\s:].*?)\s*(?:\.\s*)?(?:I hope it is correct|$)", re.IGNORECASE | re.MULTILINE
)
# A looser closing line: "Final Answer: The largest $n$ is 34." (no "final answer is").
FINAL_ANSWER_LINE = re.compile(r"final answer\b", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
# Chat-template control tokens a model sometimes writes out as text. What follows one belongs to another
# turn; only a turn the template marks as the assistant's is a (new, last) attempt of this response.
_CHAT_TOKEN = re.compile(
    r"<\|(?:im_start|im_end|endoftext|end_of_text|eot_id|start_header_id|end_header_id|begin_of_text|eos|"
    r"user|assistant|system|end)\|>|<(?:start|end)_of_turn>|</s>|\[/?INST\]"
)
_ASSISTANT_TURN = re.compile(r"\s*(?:assistant|model)\b[ \t]*(?:<\|end_header_id\|>)?\s*", re.IGNORECASE)
# Words that take back what was just stated ("18? No wait, it is 20", "Actually, it is 7"): an answer
# they follow is not the response's last word.
RETRACTION = re.compile(
    r"\b(?:wait|actually|I mean|scratch that|correction|oops|sorry|my mistake|no,? wait)\b"
    r"|(?:^|[?.!,;:(]\s*)(?:no|nope)\s*[,.!;:]",
    re.IGNORECASE,
)
# A base model that runs on into a new problem after answering ("\n\nProblem:\n...").
_NEXT_PROBLEM = re.compile(r"\n\s*(?:Problem|Question)\s*(?:\d+\s*)?:", re.IGNORECASE)


def answer_region(text: str) -> str:
    """The part of a response that holds its answer: its last assistant turn, before any next problem."""
    tokens = list(_CHAT_TOKEN.finditer(text))
    region = text[: tokens[0].start()] if tokens else text
    for token, following in zip(tokens, tokens[1:] + [None]):
        turn = text[token.end() : following.start() if following else len(text)]
        role = _ASSISTANT_TURN.match(turn)
        if token.group(0) in ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>") and role:
            if turn[role.end() :].strip():  # a new attempt written out after a template header: it replaces
                region = turn[role.end() :]
    cut = _NEXT_PROBLEM.search(region)
    if cut and region[: cut.start()].strip():
        region = region[: cut.start()]
    return region


def last_box_end(text: str) -> int | None:
    """Where the last closed `\\boxed{...}` ends, or None."""
    for match in reversed(list(_BOXED.finditer(text))):
        content = _braced_or_token(text, match.end())
        if content is not None:
            return match.end() + len(content) + (2 if text[match.end() : match.end() + 1] == "{" else 0)
    return None


def final_answer_statement(text: str) -> str | None:
    """X from the last "The final answer is X. I hope it is correct." (dollars and \\boxed unwrapped)."""
    matches = list(_FINAL_ANSWER.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1).strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        answer = boxed
    answer = strip_math_delimiters(answer)
    return answer or None


def final_answer_text(text: str) -> tuple[str | None, int]:
    """(the raw X of the last "final answer is X", where its sentence ends), or (None, 0).

    Delimiters are kept; stray escaped ones (`\\$5\\$`) become plain ones and a closing dot goes.
    """
    matches = list(_FINAL_ANSWER.finditer(text))
    if not matches:
        return None, 0
    answer = matches[-1].group(1).strip()
    if answer.startswith("\\$") and answer.rstrip(".").endswith("\\$"):  # "\$5\$": escaped math delimiters
        answer = "$" + answer.rstrip(".")[2:-2] + "$"
    return answer.rstrip(".").strip() or None, matches[-1].end()


def stated_answer(text: str) -> tuple[str | None, str]:
    """(answer, where from): the Final Answer statement, else the last \\boxed{}; (None, "none") if neither."""
    statement = final_answer_statement(text)
    if statement is not None:
        return statement, "final answer"
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "\\boxed"
    return None, "none"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces balanced), or of `\\boxed 5`; None if absent."""
    for match in reversed(list(_BOXED.finditer(text))):
        content = _braced_or_token(text, match.end())
        if content is not None:
            return content.strip()
    return None


def _braced_or_token(text: str, start: int) -> str | None:
    if start >= len(text):
        return None
    if text[start] != "{":
        token = re.match(r"[^\s$]+", text[start:])
        return token.group(0) if token else None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "\\":
            continue
        if ch == "{" and text[i - 1] != "\\":
            depth += 1
        elif ch == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None  # unbalanced: the box never closes


def strip_math_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
    return text.strip().rstrip(".").strip()
