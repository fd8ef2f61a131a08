"""/docs: Swagger UI from the server's own assets, so it works without internet."""

from __future__ import annotations

import re


async def test_docs_load_every_asset_from_the_server_itself(api):
    """/docs names only same-server URLs for its scripts and styles, and each of them is served."""
    page = await api.get("/docs")

    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(u.endswith(".js") for u in urls), page.text
    assert any(u.endswith(".css") for u in urls), page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere"
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "'/openapi.json'" in page.text
