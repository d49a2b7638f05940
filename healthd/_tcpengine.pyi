"""Type stub of the C extension healthd/_tcpengine.c (TCP connect checks in C)."""

TIMEOUT: int
HTTP_STATUS: int
HTTP_CLOSED_EARLY: int
HTTP_BAD_LINE: int
HTTP_CLOSED_IN_HEAD: int
HTTP_HEAD_TOO_LONG: int
MAX_HEAD_BYTES: int
PENDING_MAX: int

class Engine:
    in_flight: int
    finished: int
    threaded: bool
    def __init__(
        self,
        max_in_flight: int = ...,
        jitter: float = ...,
        seed: int = ...,
        duration_bounds: tuple[float, ...] = ...,
        delay_bounds: tuple[float, ...] = ...,
        threaded: bool = ...,
        nice: int = ...,
    ) -> None: ...
    def add(
        self,
        address: str,
        port: int,
        interval_s: float,
        timeout_s: float,
        due: float,
        rise: int = ...,
        reset: bool = ...,
        request: bytes | None = ...,
        expect: tuple[tuple[int, int], ...] | None = ...,
    ) -> int: ...
    def remove(self, handle: int) -> None: ...
    def run(self, budget: int = ...) -> list[tuple[int, int, float, float, int | bytes | None]]: ...
    def hold(self, held: bool) -> None: ...
    def quiet(self, handle: int, quiet: bool) -> None: ...
    def drain_one(self, handle: int) -> tuple[int, float, tuple[int, ...], float, float] | None: ...
    def drain(
        self, limit: int = ...
    ) -> tuple[
        list[tuple[int, int, float, tuple[int, ...], float, float]],
        tuple[tuple[int, ...], int, float],
        bool,
    ]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...
