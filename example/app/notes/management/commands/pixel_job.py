"""A job as long as you ask: for scheduled commands (cron:) and their tests."""

import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Work for --seconds (sleeping), say when it started and ended, exit with --exit."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=0.0)
        parser.add_argument("--exit", type=int, default=0)

    def handle(self, *args, seconds, exit, **options):
        self.stdout.write(f"pixel_job started, {seconds:g}s of work")
        self.stdout.flush()
        time.sleep(seconds)
        self.stdout.write(f"pixel_job ended, exit {exit}")
        self.stdout.flush()
        if exit:
            sys.exit(exit)
