from __future__ import annotations

from tests.integration.gateway.conftest import egress_map, open_client, options


async def test_port_forward_echo(backends, run_gateway):
    echo = await backends.echo()
    run = await run_gateway(egress_map(("smtp.example.test", 465, 30465)),
                            options(f"smtp.example.test:465=127.0.0.1:{echo.port}"))
    reader, writer = await open_client(run.port(30465))
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()
    lines = await run.log_lines(1)
    assert "up=5 down=5" in lines[0], lines
