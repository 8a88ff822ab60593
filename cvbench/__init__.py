"""cvbench: classical and deep computer-vision methods on five image-classification tasks,
run through one evaluation harness into one honest, reproducible leaderboard."""

__version__ = "0.1.0"
