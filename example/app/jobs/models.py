from django.db import models


class JobRun(models.Model):
    """One run of a job: a row when it starts, its end when it finished. A job that ran
    twice has two rows; one that was lost has none."""

    key = models.CharField(max_length=100, db_index=True)
    task_id = models.CharField(max_length=64)
    version = models.CharField(max_length=100)
    worker = models.CharField(max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True)


class Tick(models.Model):
    """One run of the scheduled job (celery beat's `tick`)."""

    task_id = models.CharField(max_length=64)
    version = models.CharField(max_length=100)
    ran_at = models.DateTimeField(auto_now_add=True)
