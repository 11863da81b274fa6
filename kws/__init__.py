"""Quantized keyword spotting for FPGAs: Speech Commands -> MLPerf Tiny features -> Brevitas MLP
-> QONNX -> MLPerf Tiny BIN files. One module per DVC stage; scripts/ holds the thin CLIs."""
