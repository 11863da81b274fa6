"""FINN v0.10.1's python execution of a lowered convolutional network (model.arch cnn), on a batch.

Two fixes to how the release executes such graphs; neither changes a computed value:
- qonnx 0.4.0's Im2Col (the convolutions after streamlining, and FINN's ConvolutionInputGenerator,
  which executes through it) is exact for one sample only: it reshapes its (K*C, L*N) columns as
  if they were (N, C, K, L), which mixes the samples of a batch. The wrapper runs the release's
  own execute_node on each sample and stacks the results.
- step_convert_to_hw removes the Transpose and Flatten between the last convolution and the
  first fully connected layer (RemoveCNVtoFCFlatten: the MVAU's weights are permuted instead, so
  it reads the convolution's NHWC output stream in order). In hardware, and in FINN's own cppsim,
  the MVAU reads its input as that stream: cppsim reshapes the tensor to the layer's folded shape.
  The release's python execution multiplies the tensor as it arrives, (N, 1, W, C) against
  (W*C, MH), and fails. The wrapper gives the release's execute_node the input reshaped to the
  layer's normal input shape (numInputVectors + [MW]): the same elements in the same order.
Graphs without these layers (the MLP) run exactly as before."""
from __future__ import annotations

import numpy as np


def install() -> None:
    from qonnx.custom_op.general.im2col import Im2Col

    from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU

    release_im2col = Im2Col.execute_node
    release_mvau = MVAU.execute_node

    def im2col_per_sample(self, context, graph):
        source, target = self.onnx_node.input[0], self.onnx_node.output[0]
        x = context[source]
        rows = []
        for i in range(len(x)):
            one = {source: x[i:i + 1]}
            release_im2col(self, one, graph)
            rows.append(one[target])
        context[target] = np.concatenate(rows)

    def mvau_on_its_stream(self, context, graph):
        name = self.onnx_node.input[0]
        given = context[name]
        shape = tuple(self.get_normal_input_shape())
        if given.shape == shape:
            return release_mvau(self, context, graph)
        if given.size != int(np.prod(shape)):
            raise RuntimeError(f"{self.onnx_node.name}: input {given.shape} does not stream into {shape}")
        context[name] = given.reshape(shape)
        try:
            return release_mvau(self, context, graph)
        finally:
            context[name] = given

    Im2Col.execute_node = im2col_per_sample
    MVAU.execute_node = mvau_on_its_stream
