"""`base`: intrinsic self-correction by prompting alone (SCoRe's baseline), no training.

Everything it does is the core's default: attempt k+1 answers [prompt, attempt k, instruction].
"""

from harness.method import Method, register_method


@register_method("base")
class Base(Method):
    paper = "Kumar et al., 2024 (SCoRe), intrinsic self-correction baseline"
    trains = "nothing"
