"""Human ratings in Label Studio, MLLM judges, and how well they agree.

aspects (what is rated, one wording for humans and judges), rubric (the Label Studio forms),
versions (the clips to rate), blinding (opaque ids and the private key back),
labelstudio_server / labelstudio_client, tables (CSV rows),
judges / judge_prompts / judge_answers / judging (the MLLM judges and running them),
agreement (the statistics), report (the agreement report), cli (``python -m annotation``)."""
