"""Cached answers: POST /requests to ``complete`` through the local stack for questions answered before, rated 👍 and
graded (served from the verified answer), beside the same questions asked fresh. The loopback model adds L = 500 ms
to every call, so a model call cannot hide; the bench counts them. Target: cached p50 ≤ 50 ms with 0 model calls.
Prints one JSON object as its last line."""

from __future__ import annotations

import datetime as dt
import json
import random
import time

from _stack import ask_and_wait, docs_stack, rate, summary_ms

from askflow.domain.model import RequestStatus

BENCH_TOKEN = "bench-asker-token-0123456789"
QUESTIONS = ["How do tasks pull an XCom value?", "How do I disable catchup?", "Where do connections come from?",
             "What is an XCom backend?", "How is a DAG scheduled?"]


def main(rounds: int = 8) -> dict:
    from askflow.bootstrap import bootstrap
    from askflow.domain.messages import GradingDue
    from askflow.service_layer.evaluation import grade_events

    with docs_stack(learned_collection="bench_learned") as bench:
        wire, api_url, settings = bench.wire, bench.api_url, bench.settings
        wire.latency_s = 0.5
        earlier = {}
        for question in QUESTIONS:  # asked once, rated 👍, graded: verified answers
            record, _ = ask_and_wait(api_url, question, token=BENCH_TOKEN)
            assert record["status"] == RequestStatus.COMPLETE, record
            rate(api_url, record["request_id"], {"positive": True}, token=BENCH_TOKEN)
            earlier[question] = record["request_id"]
        with bootstrap(settings) as c:
            events = [GradingDue(request_id=r, revision=c.requests.get(r).revision()) for r in earlier.values()]
            run = grade_events(events, requests=c.requests, runs=c.evaluation_runs, store=c.store,
                               embeddings=c.embeddings, grader=c.grader, strategy=c.strategy(),
                               answers_source=c.settings.answers_source, answers_base_url=c.settings.answers_base_url,
                               batch_size=10, signals=c.signals, collection=c.serving().collection)
        calls_before = len([call for call in wire.calls if call["path"].endswith("/chat/completions")])
        pauses = random.Random(7)
        client, worker, delivery, served = [], [], [], 0
        for i in range(rounds * len(QUESTIONS)):
            time.sleep(pauses.uniform(0, 0.1))  # out of step with the emulator's 100 ms push loop
            record, elapsed = ask_and_wait(api_url, QUESTIONS[i % len(QUESTIONS)], poll_s=0.005)
            served += record["mode"] == "cached"
            client.append(elapsed)
            worker.append(record["timings_ms"]["total_ms"])
            delivery.append((dt.datetime.fromisoformat(record["received_at"])
                             - dt.datetime.fromisoformat(record["published_at"])).total_seconds() * 1000)
        model_calls = len([call for call in wire.calls if call["path"].endswith("/chat/completions")]) - calls_before
        post_to_complete = summary_ms(client)
        return {
            "verified": run.good, "asked": len(client), "served_from_cache": served, "model_calls": model_calls,
            "post_to_complete": post_to_complete,
            "worker_pipeline": summary_ms(worker),
            # the emulator's push loop wakes every 100 ms: 0-100 ms of every answer is Pub/Sub's, 50 on average
            "published_to_received": summary_ms(delivery),
            "post_to_complete_less_delivery": summary_ms([c - d for c, d in zip(client, delivery, strict=True)]),
            "within_target": post_to_complete["p50_ms"] <= 50 and model_calls == 0 and served == len(client),
        }


if __name__ == "__main__":
    print(json.dumps(main()))
