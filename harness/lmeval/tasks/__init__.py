"""lm-eval task configs (`selfcorrect_gsm8k`, `selfcorrect_math500`, `selfcorrect_humaneval`) and their `!function` hooks (utils.py).

Pass this folder to lm-eval as `--include_path "$(harness lm-eval-path)"`.
"""
