"""The self-correction rollout: generation backends, episode records and the K-attempt driver."""

from harness.rollout.driver import run_episodes
from harness.rollout.episode import Episode, Step
from harness.rollout.generator import Completion, EngineGenerator, Generator, HFGenerator

__all__ = ["Completion", "EngineGenerator", "Episode", "Generator", "HFGenerator", "Step", "run_episodes"]
