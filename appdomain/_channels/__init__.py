"""Channels: bounded first-in first-out channels of values between domains (``_channel``)."""
