"""An application made with `.bind()`: an ingress calling two deployments of one class."""

from ferroserve import Model, serve


@serve.deployment
class Adder:
    """Ray-style: a plain class with `__call__`, constructed with its argument."""

    def __init__(self, amount):
        self.amount = amount

    def __call__(self, payload):
        return {"x": payload["x"] + self.amount}


@serve.deployment(name="ingress-app")
class Ingress(Model):
    """kserve-style, handed the two deployments as handles."""

    def __init__(self, first, second):
        super().__init__("ingress-app")
        self.first = first
        self.second = second
        self.ready = True

    async def predict(self, payload, headers=None):
        return await self.second.remote(self.first.remote(payload))


# add10 is declared exposed: clients reach it too; add1 stays internal.
app = Ingress.bind(Adder.options(name="add1").bind(1), Adder.options(name="add10", exposed=True).bind(10))

if __name__ == "__main__":
    from ferroserve import ModelServer

    ModelServer().start(app)
