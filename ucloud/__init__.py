"""ucloud: an IPv6-first, event-sourced virtual machine manager."""

__version__ = "0.1.0"
