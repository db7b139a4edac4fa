"""Closed-loop (no think time) users for the benchmark's floor measurement.

FloorUser hits the trivial Django view /floor/ (tests/bench/floor_app.py); TaskListUser hits the
real task list /api/tasks/ with a token (env BENCH_TOKEN), both through the same nginx and the
same gunicorn configuration, so the two read as a ratio.
"""

import os

from locust import FastHttpUser, constant, task


class FloorUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def floor(self):
        self.client.get("/floor/", name="floor: trivial Django JSON view")


class TaskListUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def task_list(self):
        self.client.get("/api/tasks/?page=1", name="[Tasks] List (no think time)",
                        headers={"Authorization": f"Token {os.environ['BENCH_TOKEN']}"})
