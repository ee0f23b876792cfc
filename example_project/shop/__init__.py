"""A tiny shop whose order flow is a durable function (see ``shop/steps.py``)."""
