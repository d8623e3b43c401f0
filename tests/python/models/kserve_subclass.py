"""A model written against the real kserve package (it subclasses kserve.Model and loads in its
constructor, as KServe's docs do), served by ferroserve: only ModelServer comes from ferroserve."""

import os

from kserve import Model

from ferroserve import ModelServer, serve


@serve.deployment(num_replicas=2)
class Doubler(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.load()

    def load(self):
        self.factor = 2
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": [self.factor * x for x in payload["instances"]], "pid": os.getpid()}


if __name__ == "__main__":
    ModelServer().start([Doubler("doubler")])
