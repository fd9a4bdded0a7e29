"""Generating the data the paper made with GPT-4: questions and paraphrases from chunks, with any LLM.

Data flow: ``sources`` (chunks of a KB or JSONL) -> ``llm`` (OpenAI-compatible endpoints, local HF
models) behind ``cache`` (SQLite response cache) -> ``checks`` -> ``paraphrase`` / ``questions``
(+ ``answerable``: a log-likelihood check) -> ``run`` (files + manifests) -> ``review`` (the manual
step). ``current_events`` chains MediaWiki pages -> KB -> questions -> paraphrases; ``cli`` adds the
``kinject paraphrase / questions / current-events`` commands.
"""
