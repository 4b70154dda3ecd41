"""Pusher whose executor also checks that the blessing is about the model being pushed."""
