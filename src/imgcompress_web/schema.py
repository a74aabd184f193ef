"""OpenAPI at /schema without a CDN: the JSON and YAML documents, and a plain HTML page.

Litestar's interactive OpenAPI pages (Scalar, Swagger UI, ReDoc, ...) load their scripts
and styles from public CDNs, which a service without internet access cannot reach and
which the page's Content-Security-Policy (self only) refuses anyway. This service serves
``/schema/openapi.json``, ``/schema/openapi.yaml`` and, at ``/schema``, the same document
rendered as plain HTML (no scripts; the site's own stylesheet).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin

__all__ = ["PlainRenderPlugin", "openapi_config"]

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def _type(schema: Mapping[str, Any]) -> str:
    """Return a short HTML description of a JSON schema's type."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " | ".join(_type(option) for option in schema[key])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(escape(str(k)) for k in kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(v))}</code>" for v in schema["enum"])
    return escape(str(kind))


def _operation(method: str, path: str, op: Mapping[str, Any]) -> list[str]:
    out = [f"<h3><code>{method.upper()} {escape(path)}</code></h3>"]
    if op.get("summary"):
        out.append(f"<p><strong>{escape(op['summary'])}</strong></p>")
    if op.get("description"):
        out.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th></tr>")
        for p in params:
            out.append(
                f"<tr><td><code>{escape(p.get('name', ''))}</code></td>"
                f"<td>{escape(p.get('in', ''))}</td><td>{_type(p.get('schema', {}))}</td>"
                f"<td>{'yes' if p.get('required') else 'no'}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        schema = content.get("schema", {})
        text = escape(schema.get("description", "")) if "description" in schema else ""
        out.append(f"<p>Body: <code>{escape(media)}</code>, {_type(schema)}. {text}</p>")
    out.append("<ul>")
    for status, response in op.get("responses", {}).items():
        kinds = [
            f"<code>{escape(media)}</code> {_type(c.get('schema', {}))}"
            for media, c in response.get("content", {}).items()
        ]
        media_text = f" ({', '.join(kinds)})" if kinds else ""
        description = escape(response.get("description", ""))
        out.append(f"<li><strong>{escape(status)}</strong> {description}{media_text}</li>")
    out.append("</ul>")
    return out


def _schemas(schemas: Mapping[str, Any]) -> list[str]:
    out = ["<h2>Schemas</h2>"]
    for name, schema in sorted(schemas.items()):
        out.append(f'<h3 id="schema-{escape(name)}"><code>{escape(name)}</code></h3>')
        if schema.get("description"):
            out.append(f"<p>{escape(schema['description'])}</p>")
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if properties:
            out.append("<table><tr><th>field</th><th>type</th><th>required</th></tr>")
            for field, spec in properties.items():
                out.append(
                    f"<tr><td><code>{escape(field)}</code></td><td>{_type(spec)}</td>"
                    f"<td>{'yes' if field in required else 'no'}</td></tr>"
                )
            out.append("</table>")
        else:
            out.append(f"<p>{_type(schema)}</p>")
    return out


def render_reference(document: Mapping[str, Any]) -> str:
    """Return an OpenAPI document as a plain HTML page: every operation and schema."""
    info = document.get("info", {})
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title} API</title>",
        '<link rel="stylesheet" href="/static/style.css"></head>',
        '<body><header><a href="/">imgcompress</a></header><main class="reference">',
        f"<h1>{title} API</h1>",
        '<p>The OpenAPI document: <a href="/schema/openapi.json">JSON</a>, '
        '<a href="/schema/openapi.yaml">YAML</a>.</p>',
        "<h2>Operations</h2>",
    ]
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                out += _operation(method, path, item[method])
    out += _schemas(document.get("components", {}).get("schemas", {}))
    out.append("</main></body></html>")
    return "\n".join(out)


class PlainRenderPlugin(OpenAPIRenderPlugin):
    """Render the OpenAPI document as plain HTML: no scripts, nothing from another origin."""

    def __init__(self, *, path: str = "/") -> None:
        """Serve the page at ``path`` under /schema."""
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """Return the page for ``openapi_schema``."""
        return render_reference(openapi_schema).encode("utf-8")


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    """Return the OpenAPI configuration: JSON, YAML and the plain page, no CDN."""
    return OpenAPIConfig(
        title=title,
        version=version,
        render_plugins=[PlainRenderPlugin(), JsonRenderPlugin(), YamlRenderPlugin()],
    )
