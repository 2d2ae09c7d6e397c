"""Planner evals: the seed's hero prompts and the behaviours real models show, run on scripted models (`make eval`,
part of `make test`) or on any OpenAI-compatible endpoint (`coviu-agent eval --base-url URL --model M`).

`cases.py` holds the cases (request, scripted turns, what must hold), `runner.py` runs them on the sandbox and
checks them, `fake_openai.py` is the OpenAI-compatible server the scripted models answer through.
"""
