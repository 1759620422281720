"""Model folders: where they are (locate), what they can do (families), and which are
loaded in a worker (resident). Only `resident` imports torch."""
