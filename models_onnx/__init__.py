"""segue models: generated interaction data, training, ONNX export and offline evaluation."""
