"""No views: the example project is driven by ``manage.py demo``."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
