"""``liveseg plugins``: what is loaded, what each plugin provides, and what failed."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["plugins_cmd"]


@click.command("plugins")
@click.option("--plugins-dir", type=click.Path(file_okay=False))
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True),
    help="List what this config loads (its plugins: allow, deny, dir).",
)
@click.option("--json", "as_json", is_flag=True)
def plugins_cmd(plugins_dir: str | None, config: str | None, as_json: bool) -> None:
    """List loaded plugins: version, source, hooks, what they provide, and failures.

    A plugin that failed to import or raised in a ``register_*`` hook is listed as an
    ``error:`` line (in JSON: an ``errors`` list) instead of stopping the listing.
    """
    from liveseg.config import PluginsConfig, load_config
    from liveseg.plugins import PluginHost

    plugins = load_config(config).plugins if config else PluginsConfig()
    host = PluginHost.from_config(plugins, plugins_dir=plugins_dir)
    infos = host.plugins()
    models = host.models()
    if as_json:
        rows: list[dict[str, Any]] = []
        for info in infos:
            row = vars(info) | {
                "errors": [f.line() for f in host.errors if f.plugin == info.name],
                "models": {
                    m.name: m.description for m in models.values() if m.plugin == info.name
                },
            }
            rows.append(row)
        loaded = {i.name for i in infos}
        for failure in host.errors:
            if failure.plugin not in loaded:
                rows.append(
                    {
                        "name": failure.plugin,
                        "source": "error",
                        "version": "",
                        "module": failure.where,
                        "hooks": [],
                        "provides": {},
                        "errors": [failure.line()],
                        "models": {},
                    }
                )
        click.echo(json.dumps(rows, indent=2))
        return
    for info in infos:
        click.echo(f"{info.name} {info.version or '-'}  [{info.source}]  {info.module}")
        if info.hooks:
            click.echo(f"    hooks: {', '.join(info.hooks)}")
        for kind, names in info.provides.items():
            if names:
                click.echo(f"    {kind}: {', '.join(names)}")
    for failure in host.errors:
        click.echo(f"error: {failure.line()}")
