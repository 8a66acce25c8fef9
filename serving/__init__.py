"""segue serving side: item catalog, candidate retrieval, the ONNX scorer, rescoring and the HTTP API."""
