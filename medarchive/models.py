"""Operational records of the service itself (not patient data)."""

from django.db import models


class WorkerHeartbeat(models.Model):
    """One row per worker host, touched by a periodic task: proves the background wiring runs."""

    worker = models.CharField(max_length=200, unique=True)
    broker = models.CharField(max_length=40)
    beats = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self):
        return f"{self.worker} ({self.broker}) at {self.last_seen:%Y-%m-%d %H:%M:%S}"
