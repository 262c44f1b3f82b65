"""ReMix engine: off-policy reinforcement fine-tuning (Mix-PPG, UTD, KL-Convex, reincarnation).

No web, SQL or Celery imports here: the engine is a library and a CLI of its own.
"""

__version__ = "0.1.0"
