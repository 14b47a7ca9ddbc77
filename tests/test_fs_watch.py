"""fs/watch: what is reported, the throttle, watch ids, and that watches die with their owner.

Every test runs under trio's MockClock (autojump): file changes are made synchronously, the
kernel queues their events at once, and the 200 ms window then passes in virtual time, so
the tests are exact about timing without sleeping.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from codex_trio.api.fs import FsApi
from codex_trio.api.fs_watch import FS_CHANGED_THROTTLE, IN_Q_OVERFLOW, ConnectionWatches, InotifyEvent
from codex_trio.client import ClientConnection
from codex_trio.connection import Connection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer

#: virtual seconds: a watch that never reports ends the test instead of hanging it.
TIMEOUT = 30.0
#: real seconds, for the tests that start servers (their start-up uses worker threads).
REAL_TIMEOUT = 10.0


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


async def fs_api(server: AppServer) -> FsApi:
    return await server.family(FsApi)


def server_side(server: AppServer, before: set[int]) -> Connection:
    (connection,) = [c for c in server.broadcaster.connections if c.id not in before]
    return connection


def inotify_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


async def load_fs_family(client: ClientConnection) -> None:
    """Any fs/* call loads the family; the server may import it in a worker thread, which the
    mock clock must not see while a test's deadline is running."""
    await client.call("fs/getMetadata", {"path": "/"})


async def changed(client: ClientConnection, watch_id: str) -> list[str]:
    """The paths of the next fs/changed of `watch_id`."""
    message = await client.wait_for("fs/changed", lambda p: p["watchId"] == watch_id)
    paths: list[str] = message["params"]["changedPaths"]
    return paths


@pytest.fixture
async def watcher(app_server: AppServer) -> AsyncIterator[ClientConnection]:
    client = await app_server.connect()
    await client.initialize()
    await client.wait_for("remoteControl/status/changed")
    await load_fs_family(client)
    yield client
    await client.aclose()


async def test_a_directory_watch_reports_its_children_sorted_and_deduplicated(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        assert await watcher.call("fs/watch", {"path": f"{ws}/x/..", "watchId": "w"}) == {"path": str(ws)}
        (ws / "b.txt").write_text("1")
        (ws / "a.txt").write_text("1")
        with (ws / "b.txt").open("a") as handle:
            handle.write("2")
        (ws / "sub").mkdir()
        (ws / "sub" / "deep.txt").write_text("not reported: the watch is not recursive")
        assert await changed(watcher, "w") == [str(ws / "a.txt"), str(ws / "b.txt"), str(ws / "sub")]
        (ws / "a.txt").rename(ws / "c.txt")
        assert await changed(watcher, "w") == [str(ws / "a.txt"), str(ws / "c.txt")]
        os.chmod(ws, 0o700)
        assert await changed(watcher, "w") == [str(ws)]


async def test_changes_are_throttled_to_one_notification_per_window(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "t"})
        began = trio.current_time()
        (ws / "1").write_text("")
        await trio.sleep(FS_CHANGED_THROTTLE / 2)
        (ws / "2").write_text("")
        assert await changed(watcher, "t") == [str(ws / "1"), str(ws / "2")]
        assert trio.current_time() - began == pytest.approx(FS_CHANGED_THROTTLE)
        await trio.sleep(FS_CHANGED_THROTTLE)
        began = trio.current_time()
        (ws / "3").write_text("")
        assert await changed(watcher, "t") == [str(ws / "3")]
        assert trio.current_time() - began == pytest.approx(FS_CHANGED_THROTTLE)


async def test_a_file_watch_survives_atomic_replacement_and_ignores_siblings(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    target = ws / "watched.txt"
    target.write_text("a")
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(target), "watchId": "file"})
        for round_ in range(3):
            (ws / "sibling.txt").write_text(str(round_))
            (ws / "tmp").write_text(str(round_))
            os.replace(ws / "tmp", target)
            assert await changed(watcher, "file") == [str(target)]
            with target.open("a") as handle:
                handle.write("appended")
            assert await changed(watcher, "file") == [str(target)]
        target.unlink()
        assert await changed(watcher, "file") == [str(target)]
        target.write_text("back")
        assert await changed(watcher, "file") == [str(target)]


async def test_a_symlinked_file_reports_writes_to_its_target(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    (ws / "elsewhere").mkdir()
    (ws / "elsewhere" / "real.txt").write_text("")
    (ws / "link.txt").symlink_to(ws / "elsewhere" / "real.txt")
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws / "link.txt"), "watchId": "l"})
        (ws / "elsewhere" / "real.txt").write_text("through the target")
        assert await changed(watcher, "l") == [str(ws / "link.txt")]


async def test_a_path_whose_parents_do_not_exist_yet_is_reported_when_it_appears(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    deep = ws / "a" / "b" / "c.txt"
    with trio.fail_after(TIMEOUT):
        assert await watcher.call("fs/watch", {"path": str(deep), "watchId": "deep"}) == {"path": str(deep)}
        (ws / "a").mkdir()
        (ws / "a" / "b").mkdir()
        deep.write_text("finally")
        assert await changed(watcher, "deep") == [str(deep)]
        deep.write_text("again")
        assert await changed(watcher, "deep") == [str(deep)]


async def test_a_directory_that_appears_later_is_reported_with_what_it_holds(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    later = ws / "later"
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(later), "watchId": "later"})
        (ws / "staging").mkdir()
        (ws / "staging" / "x.txt").write_text("")
        (ws / "staging").rename(later)
        assert await changed(watcher, "later") == [str(later), str(later / "x.txt")]
        (later / "y.txt").write_text("")
        assert await changed(watcher, "later") == [str(later / "y.txt")]


async def test_deleting_and_recreating_a_watched_directory_keeps_the_watch(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "d"})
        (ws / "sub").mkdir()
        assert await changed(watcher, "d") == [str(ws / "sub")]
        shutil.rmtree(ws)
        assert await changed(watcher, "d") == [str(ws), str(ws / "sub")]
        os.mkdir(ws)
        assert await changed(watcher, "d") == [str(ws)]
        (ws / "new.txt").write_text("")
        assert await changed(watcher, "d") == [str(ws / "new.txt")]


async def test_one_directory_under_two_path_strings_notifies_both_watches(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    (ws.parent / "alias").symlink_to(ws)
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "real"})
        await watcher.call("fs/watch", {"path": str(ws.parent / "alias"), "watchId": "alias"})
        (ws / "f.txt").write_text("")
        assert await changed(watcher, "real") == [str(ws / "f.txt")]
        assert await changed(watcher, "alias") == [str(ws.parent / "alias" / "f.txt")]


async def test_the_temporary_files_of_atomic_writes_are_not_reported(
    watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "w"})
        await watcher.call(
            "fs/writeFile", {"path": str(ws / "f.txt"), "dataBase64": base64.b64encode(b"x").decode()}
        )
        assert await changed(watcher, "w") == [str(ws / "f.txt")]


async def test_watch_ids_are_per_connection_and_a_duplicate_is_refused(
    autojump_clock: MockClock, app_server: AppServer, watcher: ClientConnection, ws: Path
) -> None:
    other = await app_server.connect()
    await other.initialize()
    try:
        with trio.fail_after(TIMEOUT):
            await watcher.call("fs/watch", {"path": str(ws), "watchId": ""})
            await other.call("fs/watch", {"path": str(ws), "watchId": ""})
            with pytest.raises(RpcError) as caught:
                await watcher.call("fs/watch", {"path": str(ws / "elsewhere"), "watchId": ""})
            assert (caught.value.code, caught.value.message) == (-32600, "watchId already exists: ")
            (ws / "both.txt").write_text("")
            assert await changed(watcher, "") == [str(ws / "both.txt")], "the first watch is unaffected"
            assert await changed(other, "") == [str(ws / "both.txt")]
    finally:
        await other.aclose()


async def test_unwatch_stops_notifications_before_it_answers(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "gone"})
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "control"})
        (ws / "pending.txt").write_text("")  # queued for both, not yet flushed
        await trio.testing.wait_all_tasks_blocked()
        assert await watcher.call("fs/unwatch", {"watchId": "gone"}) == {}
        assert await watcher.call("fs/unwatch", {"watchId": "gone"}) == {}
        assert await watcher.call("fs/unwatch", {"watchId": "never"}) == {}
        (ws / "after.txt").write_text("")
        message = await watcher.receive()
        assert message["params"] == {
            "watchId": "control",
            "changedPaths": [str(ws / "after.txt"), str(ws / "pending.txt")],
        }, "nothing was sent for the removed watch"


async def test_a_path_that_cannot_name_a_file_is_accepted_and_stays_silent(
    autojump_clock: MockClock, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        bad = f"{ws}/a\u0000b"
        assert await watcher.call("fs/watch", {"path": bad, "watchId": "nul"}) == {"path": bad}
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "control"})
        (ws / "a").write_text("")
        assert (await watcher.receive())["params"]["watchId"] == "control"


async def test_a_lost_event_queue_reports_every_watched_path(
    autojump_clock: MockClock, app_server: AppServer, watcher: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        await watcher.call("fs/watch", {"path": str(ws), "watchId": "dir"})
        await watcher.call("fs/watch", {"path": str(ws / "f"), "watchId": "file"})
        (connection,) = [c for c in app_server.broadcaster.connections]
        watches = (await fs_api(app_server)).watch.watches_of(connection)
        assert isinstance(watches, ConnectionWatches)
        watches._handle([InotifyEvent(-1, IN_Q_OVERFLOW, b"")])
        assert await changed(watcher, "dir") == [str(ws)]
        assert await changed(watcher, "file") == [str(ws / "f")]


async def test_the_last_unwatch_and_a_closed_connection_release_the_inotify_descriptor(
    autojump_clock: MockClock, app_server: AppServer, ws: Path
) -> None:
    baseline = inotify_fds()
    before = {c.id for c in app_server.broadcaster.connections}
    client = await app_server.connect()
    await client.initialize()
    await load_fs_family(client)
    connection = server_side(app_server, before)
    api = (await fs_api(app_server)).watch
    with trio.fail_after(TIMEOUT):
        await client.call("fs/watch", {"path": str(ws), "watchId": "a"})
        await client.call("fs/watch", {"path": str(ws / "f"), "watchId": "b"})
        assert inotify_fds() == baseline + 1, "one descriptor per connection"
        watches = api.watches_of(connection)
        assert watches is not None and watches.kernel_watches == 2  # ws and its parent
        await client.call("fs/unwatch", {"watchId": "a"})
        assert watches.kernel_watches == 1
        await client.call("fs/unwatch", {"watchId": "b"})
        await trio.testing.wait_all_tasks_blocked()
        assert api.watches_of(connection) is None and inotify_fds() == baseline
        await client.call("fs/watch", {"path": str(ws), "watchId": "a"})
        assert inotify_fds() == baseline + 1
        await client.aclose()
        await connection.closed.wait()
        await trio.testing.wait_all_tasks_blocked()
    assert api.watches_of(connection) is None
    assert inotify_fds() == baseline


async def test_shutdown_with_active_watches_is_prompt_and_leaves_nothing_running(
    leak_check: Any, server_settings: Any, ws: Path
) -> None:
    baseline = inotify_fds()
    server = AppServer(server_settings)
    with trio.fail_after(REAL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            clients = [await server.connect() for _ in range(3)]
            for n, client in enumerate(clients):
                await client.initialize()
                await client.call("fs/watch", {"path": str(ws), "watchId": f"w{n}"})
            assert inotify_fds() == baseline + 3
            began = trio.current_time()
            server.shutdown()
            await server.stopped.wait()
            assert trio.current_time() - began < 1.0
            for client in clients:
                await client.aclose()
    assert inotify_fds() == baseline
