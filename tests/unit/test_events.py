import asyncio

from corral.events import Broadcaster


def test_every_subscriber_gets_events_and_a_full_one_drops_instead_of_blocking():
    async def scenario():
        b = Broadcaster(maxsize=2)
        fast, slow = b.subscribe(), b.subscribe()
        for i in range(3):
            b.publish({"n": i})
            assert (await fast.get()) == {"n": i}
        assert [slow.get_nowait()["n"] for _ in range(slow.qsize())] == [0, 1]
        b.unsubscribe(fast)
        b.publish({"n": 9})
        assert fast.empty() and slow.get_nowait() == {"n": 9}

    asyncio.run(scenario())
