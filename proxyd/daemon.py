"""Run the daemon: load config, bind, serve, reload on SIGHUP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Mapping
from pathlib import Path

from proxyd.config import Config, ConfigError, ListenAddress, load_config
from proxyd.inbound import ProxyServer, StartupError, TransparentServer, bind_listener
from proxyd.learning import NullStats, Stats
from proxyd.ops import AdminServer, InheritedSocket, Notifier, daemon_context, listen_fds
from proxyd.routing import LearnedRoutes, default_state_dir

log = logging.getLogger("proxyd")

# Descriptors one spliced tunnel holds: client and server sockets and a pipe each way.
FDS_PER_TUNNEL = 6
# Keys a reload cannot apply: they are bound or opened once, at start.
RESTART_KEYS = ("admin", "state_dir", "metrics", "dns_listen", "transparent")
# Without a watchdog, how often systemd's one-line STATUS is refreshed when it changed.
STATUS_REFRESH = 10.0


def _check_inherited(config: Config, sockets: list[InheritedSocket]) -> None:
    for inherited in sockets:
        host, port = inherited.socket.getsockname()[:2]
        if not ListenAddress(host, port).is_loopback and not config.allow:
            raise StartupError(
                f"refusing to run as an open proxy on inherited socket {host}:{port}: "
                "set allow = [...] to the client networks"
            )


class Daemon:
    def __init__(self, config: Config, config_path: Path | None, overrides: Mapping[str, object]):
        self.config = config
        self._config_path = config_path
        self._overrides = dict(overrides)
        self._stop = asyncio.Event()
        self._notifier = Notifier.from_env()
        state_dir = config.state_dir or default_state_dir()
        self.stats = Stats() if config.metrics else NullStats()
        self.learned = LearnedRoutes(
            config.learning,
            state_dir,
            connect_timeout=config.limits.connect_timeout,
            stats=self.stats,
        )
        self.server = ProxyServer(config, self.learned, self.stats)
        self.learned.on_saved = self.stats.state_saved

    def _summary(self) -> str:
        """systemd's STATUS line: what `systemctl status proxyd` shows."""
        server = self.server
        listening = ", ".join(f"{h}:{p}" for h, p in server.proxy_addresses)
        blocked = sum(1 for e in self.learned.table.snapshot() if e.state.value == "blocked")
        upstreams = server.rt.upstreams.status()
        up = sum(1 for u in upstreams if u.up)
        return (
            f"serving {listening}; {server.active_clients} clients; "
            f"{blocked} domains routed around blocks; upstreams up {up}/{len(upstreams)}"
        )

    def reload(self) -> None:
        self._notifier.reloading("reloading configuration")
        try:
            config = load_config(self._config_path, overrides=self._overrides)
            self.server.apply_config(config)
        except (ConfigError, StartupError) as err:
            self.stats.config_reloaded(False)
            log.error("reload failed, keeping the previous configuration: %s", err)
            self._notifier.ready(f"reload failed: {err}; kept previous config")
            return
        for key in RESTART_KEYS:
            if getattr(config, key) != getattr(self.config, key):
                log.warning("%s changed: takes effect at the next restart", key)
        logging.getLogger().setLevel(config.log_level.upper())
        self.config = config
        self.stats.config_reloaded(True)
        log.info("configuration reloaded from %s", self._config_path or "embedded defaults")
        self._notifier.ready(self._summary())

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        fd_limit = raise_fd_limit()
        inherited = listen_fds()
        proxy_sockets = [s for s in inherited if s.name in ("proxy", "unknown")]
        _check_inherited(self.config, proxy_sockets)
        admin_sockets = [s.socket for s in inherited if s.name == "admin"]
        if self.config.admin is not None and not admin_sockets:
            admin_sockets = [bind_listener(self.config.admin)]  # before serving: fail early
        _prepare_state_dir(self.learned.path.parent)
        self.learned.load()
        self.server.start([s.socket for s in proxy_sockets] or None)
        await self.server.start_dns_listener()
        transparent = self._start_transparent()
        self.learned.start_retests(self.server.direct)
        health = asyncio.ensure_future(self.server.rt.upstreams.run_health_checks())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info("proxyd listening on %s", ", ".join(f"{h}:{p}" for h, p in self.server.addresses))
        if fd_limit < self.config.limits.max_connections * FDS_PER_TUNNEL:
            log.warning(
                "the open-file limit (%d) allows about %d tunnels, fewer than "
                "limits.max_connections (%d): raise LimitNOFILE",
                fd_limit,
                fd_limit // FDS_PER_TUNNEL,
                self.config.limits.max_connections,
            )
        admin = AdminServer(daemon_context(self.server, self.learned)) if admin_sockets else None
        if admin is not None:
            await admin.start(admin_sockets[0])
            for endpoint in admin.addresses:
                self.server.add_own_endpoint(endpoint)
        self._notifier.ready(self._summary())
        watchdog = self._start_notify_loop()
        try:
            await self._stop.wait()
            grace = self.config.limits.drain_grace
            self._notifier.stopping(f"draining {self.server.active_clients} connections")
            log.info("stopping: draining connections for up to %gs", grace)
            if transparent is not None:
                await asyncio.gather(self.server.drain(grace), transparent.drain(grace))
            else:
                await self.server.drain(grace)
            if admin is not None:
                await admin.stop()
            await self.learned.close()
        finally:
            health.cancel()
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0

    def _start_transparent(self) -> TransparentServer | None:
        """The router's redirected LAN traffic, on the proxy's own runtime (same routes,
        learning and counters); its listeners are endpoints the proxy must never dial."""
        if not self.config.transparent.listen:
            return None
        transparent = TransparentServer(self.server.rt, self.server.direct)
        transparent.start()
        for endpoint in transparent.addresses:
            self.server.add_own_endpoint(endpoint)
        log.info(
            "transparent (%s) on %s",
            self.config.transparent.mode,
            ", ".join(f"{h}:{p}" for h, p in transparent.addresses),
        )
        return transparent

    def _start_notify_loop(self) -> asyncio.Task[None] | None:
        notifier = self._notifier
        if not notifier.active:
            return None
        timeout = notifier.watchdog_interval()
        period = STATUS_REFRESH if timeout is None else min(timeout / 2, STATUS_REFRESH)

        async def ping() -> None:
            # Pinged from the loop itself, so a stalled loop stops the pings and systemd
            # restarts the service.
            shown = self._summary()
            while True:
                if timeout is not None:
                    notifier.watchdog()
                summary = self._summary()
                if summary != shown:
                    notifier.status(summary)
                    shown = summary
                await asyncio.sleep(period)

        return asyncio.ensure_future(ping())


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the limit now in force.

    The usual soft limit of 1024 would cap proxyd near 170 spliced tunnels while the hard
    limit allows far more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


def _prepare_state_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("state directory %s unusable (%s): learning kept in memory only", path, exc)


def run_daemon(config: Config, config_path: Path | None, overrides: Mapping[str, object]) -> int:
    async def main() -> int:
        return await Daemon(config, config_path, overrides).run()

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
