from django.conf import settings
from django.urls import path
from notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health", views.health, name="health"),
    path("slow", views.slow, name="slow"),
    path("record", views.record, name="record"),
]

if settings.CELERY_BROKER_URL:
    from jobs import views as jobs_views

    urlpatterns.append(path("jobs/enqueue", jobs_views.enqueue, name="enqueue"))
