"""Models of the batching tests (tests/python/test_batching.py).

- `Rows`: tensor batching, no batching code. Doubles `x` into `y` and answers, for each row,
  how many rows the call it ran in held (`rows`), so a client sees the batch it was part of.
  A batch starting with -7 takes 3 s (to be killed in).
- `Listed`: Ray's list batching: `predict` is a `@serve.batch` handler taking a list of
  requests; answers `y` = 2x and `n` = how many requests the list held. A request whose
  first value is -1 makes it call `self.predict.set_max_batch_size(2)`, as Ray's models do
  at run time.
"""

import time

import numpy as np

from ferroserve import InferOutput, InferResponse, Model, serve


class Rows(Model):
    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        x = request.inputs[0].as_numpy()
        time.sleep(3 if x.flat[0] == -7 else 0.01)  # a fixed cost per call, as a GPU would have
        rows = np.full((x.shape[0], 1), x.shape[0], dtype=np.int32)
        return InferResponse(
            request.id,
            self.name,
            [InferOutput("y", list(x.shape), "INT32", data=x * 2), InferOutput("rows", list(rows.shape), "INT32", data=rows)],
        )


class Listed(Model):
    def load(self):
        self.ready = True

    @serve.batch(max_batch_size=6, batch_wait_timeout_s=1.0)
    async def predict(self, requests, headers):
        assert isinstance(requests, list) and len(headers) == len(requests)
        out = []
        for r in requests:
            x = r.inputs[0].as_numpy()
            if x.flat[0] == -1:
                self.predict.set_max_batch_size(2)
            n = np.full(x.shape, len(requests), dtype=np.int32)
            out.append(
                InferResponse(r.id, self.name, [InferOutput("y", list(x.shape), "INT32", data=x * 2), InferOutput("n", list(n.shape), "INT32", data=n)])
            )
        return out
