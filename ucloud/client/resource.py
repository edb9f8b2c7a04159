"""The verbs every simple gateway resource shares: create, list, show, delete, ``--wait``.

Images and networks are made by a handler after the gateway accepts the request, so
``create --wait`` follows the resource until it is ``created`` (or says why it
``failed``) and ``delete --wait`` until the gateway answers 404.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ucloud.client.args import add_client_options, emit, open_gateway, progress_printer
from ucloud.client.http import GatewayClient, path
from ucloud.client.output import Layout
from ucloud.client.wait import GONE, Target, follow, judge_resource
from ucloud.errors import ApiError

View = Mapping[str, Any]


@dataclass(frozen=True)
class Resource:
    noun: str  # as the CLI names it: "image", "net"
    collection: str  # under /v1: "images", "networks"
    layout: Layout
    timeout_s: float
    poll_s: float

    def add_wait_options(self, parser: argparse.ArgumentParser, target: str) -> None:
        parser.add_argument(
            "--wait", action="store_true", help=f"wait until the {self.noun} is {target}"
        )
        parser.add_argument(
            "--timeout", type=float, default=self.timeout_s,
            help=f"give up waiting after this many seconds (default {self.timeout_s:g})",
        )
        parser.set_defaults(target=target)
        add_client_options(parser)

    def add_reads(self, verbs: Any, *, listing_help: str) -> None:
        """The ``list`` and ``show ID`` verbs."""
        listing = verbs.add_parser("list", help=listing_help)
        add_client_options(listing)
        listing.set_defaults(func=self.list)
        show = verbs.add_parser("show", help=f"show one {self.noun}")
        show.add_argument("id", help=f"{self.noun} id or name")
        add_client_options(show)
        show.set_defaults(func=self.show)

    def create(self, args: argparse.Namespace, body: Mapping[str, Any]) -> int:
        with open_gateway(args) as gateway:
            view = gateway.post(f"/v1/{self.collection}", dict(body))
            return self.finish(args, gateway, view)

    def delete(self, args: argparse.Namespace) -> int:
        with open_gateway(args) as gateway:
            view = gateway.delete(path("v1", self.collection, args.id))
            return self.finish(args, gateway, view)

    def list(self, args: argparse.Namespace) -> int:
        with open_gateway(args) as gateway:
            emit(args, gateway.get(f"/v1/{self.collection}"), self.layout)
        return 0

    def show(self, args: argparse.Namespace) -> int:
        with open_gateway(args) as gateway:
            emit(args, gateway.get(path("v1", self.collection, args.id)), self.layout)
        return 0

    def finish(self, args: argparse.Namespace, gateway: GatewayClient, view: View) -> int:
        """Print the answer, or with ``--wait`` follow it to the target and print that."""
        if not args.wait:
            emit(args, view, self.layout)
            return 0
        ident = str(view["id"])
        final = follow(
            functools.partial(self.fetch, gateway, ident), Target(args.target),
            name=str(view.get("name")), first=view, timeout=args.timeout,
            interval=self.poll_s, report=progress_printer(args),
            rule=judge_resource, noun=self.noun,
        )
        if final is not None:
            emit(args, final, self.layout)
        elif args.output == "json":
            emit(args, {"id": ident, "status": GONE}, self.layout)
        return 0

    def fetch(self, gateway: GatewayClient, ident: str) -> View | None:
        """The current view, or None once the gateway answers 404."""
        try:
            view: View = gateway.get(path("v1", self.collection, ident))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return view
