"""STAC sources: STAC API collections (pystac-client) and static STAC catalogs, loaded with odc-stac.

Items are searched by bounding box, time and property filters; odc-stac then builds a lazy, chunked
cube on a common grid (the catalog's ``crs``/``resolution``, else the items' native one), one time step
per solar day, and reads pixels (HTTP range requests for COGs) only when the cube is computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr

from terramind_openeo.processes.catalog import CollectionConfig
from terramind_openeo.processes.errors import CatalogInvalid, NoDataAvailable, ProcessParameterInvalid
from terramind_openeo.processes.extents import BBox
from terramind_openeo.processes.urls import UrlPolicy, check_location, check_many, fetch

logger = logging.getLogger(__name__)
MAX_ITEMS = 5000


def _datetime_query(interval) -> str | None:
    if interval is None:
        return None
    start, end = interval

    def fmt(t: pd.Timestamp) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    # openEO intervals exclude their end; STAC datetime ranges include it: stop one second earlier
    return f"{fmt(start) if start is not None else '..'}/{fmt(end - pd.Timedelta(seconds=1)) if end is not None else '..'}"


def _property_filter(properties: Any) -> Callable[[dict], bool]:
    """openEO ``properties``: ``{name: callback(value) -> bool}``."""
    if not properties:
        return lambda props: True
    if not isinstance(properties, dict):
        raise ProcessParameterInvalid("must map property names to conditions", argument="properties")

    def keep(props: dict) -> bool:
        for name, condition in properties.items():
            if name not in props:
                return False
            value = props[name]
            ok = condition(value=value) if callable(condition) else value == condition
            if not bool(ok):
                return False
        return True

    return keep


def _modifier(sign: str | None):
    if sign == "planetary_computer":
        import planetary_computer

        return planetary_computer.sign_inplace
    return None


def _search_api(url: str, collection: str, bbox: BBox | None, interval, sign: str | None,
                policy: UrlPolicy | None = None) -> list:
    import pystac_client

    stac_io = checked_stac_api_io(policy) if policy is not None and not policy.trusted_caller else None
    client = pystac_client.Client.open(url, modifier=_modifier(sign), stac_io=stac_io)
    search = client.search(collections=[collection], bbox=bbox.to_crs(4326).as_tuple() if bbox else None,
                           datetime=_datetime_query(interval), max_items=MAX_ITEMS)
    return list(search.items())


def _static_items(url: str, bbox: BBox | None, interval, policy: UrlPolicy | None = None) -> list:
    import pystac

    stac_io = checked_stac_io(policy) if policy is not None and not policy.trusted_caller else None
    obj = pystac.read_file(url, stac_io=stac_io)
    items = [obj] if isinstance(obj, pystac.Item) else list(obj.get_items(recursive=True))
    out = []
    for item in items:
        if bbox is not None and item.bbox is not None:
            if not BBox.from_bounds([*item.bbox[:2], *item.bbox[-2:]], bbox.to_crs(4326).crs).intersects(bbox):
                continue
        when = item.datetime or item.common_metadata.start_datetime
        if interval is not None and when is not None:
            t = pd.Timestamp(when).tz_convert("UTC").tz_localize(None) if pd.Timestamp(when).tzinfo else pd.Timestamp(when)
            if (interval[0] is not None and t < interval[0]) or (interval[1] is not None and t >= interval[1]):
                continue
        out.append(item)
    return out


def checked_stac_io(policy: UrlPolicy):
    """A pystac ``StacIO`` whose every read (the document, its links, its items) goes through
    ``urls.fetch``: checked location, pinned address, each redirect checked, size bounded."""
    import pystac

    class CheckedStacIO(pystac.stac_io.DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            return fetch(str(href), policy).decode("utf-8", errors="replace")

        def write_text_to_href(self, href: str, txt: str) -> None:
            raise PermissionError("writing STAC documents is not allowed here")

    return CheckedStacIO()


def checked_stac_api_io(policy: UrlPolicy):
    """A pystac-client ``StacApiIO`` whose requests (searches and their next pages included) go through
    ``urls.fetch``."""
    from pystac_client.stac_api_io import StacApiIO

    class CheckedStacApiIO(StacApiIO):
        def request(self, href, method=None, headers=None, parameters=None) -> str:
            method = (method or "GET").upper()
            body = fetch(str(href), policy, method=method, headers=headers,
                         params=None if method == "POST" else _flat_params(parameters),
                         json=parameters if method == "POST" else None)
            return body.decode("utf-8", errors="replace")

        def read_text(self, source, *args, **kwargs) -> str:
            href = getattr(source, "href", source)
            if not isinstance(href, str):
                raise PermissionError("only URLs may be read here")
            return self.request(href)

    return CheckedStacApiIO()


def _flat_params(parameters) -> dict | None:
    """Query parameters as pystac-client sends them with GET (lists joined by commas, objects as JSON)."""
    import json as _json

    if not parameters:
        return None
    out = {}
    for key, value in parameters.items():
        if isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            out[key] = _json.dumps(value)
        elif value is not None:
            out[key] = str(value)
    return out


def asset_hrefs(items: list, assets: list[str] | None) -> list[str]:
    """The hrefs a reader would open for ``assets`` (all assets when None) of ``items``."""
    hrefs = []
    for item in items:
        for key, asset in item.assets.items():
            if assets is None or key in assets:
                hrefs.append(asset.get_absolute_href() or asset.href)
    return hrefs


def _load_items(items: list, assets: list[str] | None, names: list[str] | None, bbox: BBox | None,
                crs: str | None, resolution: float | None, chunk: int) -> xr.DataArray:
    import odc.stac

    kwargs: dict[str, Any] = {"chunks": {"x": chunk, "y": chunk}, "groupby": "solar_day", "fail_on_error": True}
    if assets:
        kwargs["bands"] = assets
    if crs:
        kwargs["crs"] = crs
    if resolution:
        kwargs["resolution"] = resolution
    if bbox is not None:
        kwargs["bbox"] = bbox.to_crs(4326).as_tuple()
    ds = odc.stac.load(items, **kwargs)
    variables = list(ds.data_vars)
    cube = ds[variables].to_array("bands")
    cube = cube.assign_coords(bands=names or variables)
    if "time" in cube.dims:
        cube = cube.rename({"time": "t"})
    nodata = ds[variables[0]].attrs.get("nodata")
    if "latitude" in cube.dims:
        cube = cube.rename({"latitude": "y", "longitude": "x"})
    crs_out = ds.odc.crs
    cube = cube.drop_vars([c for c in cube.coords if c not in ("t", "bands", "y", "x")])
    cube = cube.transpose("t", "bands", "y", "x")
    cube.attrs = {"nodata": nodata}
    return cube.rio.write_crs(str(crs_out))


def load_stac_collection(cfg: CollectionConfig, bbox: BBox | None, interval, bands, properties, chunk: int
                         ) -> xr.DataArray:
    url, collection = cfg.url, cfg.stac_collection or ""
    if not url or (cfg.type == "stac_api" and not collection):
        raise CatalogInvalid(f"collection '{cfg.id}': a {cfg.type} entry needs 'url'"
                             + (" and 'stac_collection'" if cfg.type == "stac_api" else ""))
    if cfg.type == "stac_api":
        items = _search_api(url, collection, bbox, interval, cfg.sign)
    else:
        items = _static_items(url, bbox, interval)
    keep = _property_filter(properties)
    items = [i for i in items if keep(i.properties)]
    if not items:
        raise NoDataAvailable(f"collection '{cfg.id}' has no items in the requested extent",
                              argument="spatial_extent" if bbox is not None else "temporal_extent")
    selected = [b for b in cfg.bands if bands is None or b.name in bands] if cfg.bands else []
    if bands is not None and selected:
        selected = sorted(selected, key=lambda b: bands.index(b.name))
    assets = [b.asset or b.name for b in selected] or bands
    names = [b.name for b in selected] or bands
    cube = _load_items(items, assets, names, bbox, cfg.crs, cfg.resolution, chunk)
    if cfg.nodata is not None:
        cube.attrs["nodata"] = cfg.nodata
    return cube


def load_stac_url(url: str, bbox: BBox | None, interval, bands, properties, chunk: int,
                  policy: UrlPolicy | None = None) -> xr.DataArray:
    """``load_stac`` of a user-given URL: the URL, every document read for it and every asset href the
    pixels come from are checked by ``policy`` (``urls.check_location``) before anything is read."""
    if not isinstance(url, str) or not url:
        raise ProcessParameterInvalid("must be the URL of a STAC collection, catalog or item", argument="url")
    policy = policy or UrlPolicy.trusted()
    where = check_location(url, policy)
    if where.local_path is not None and not policy.trusted_caller:
        url = where.local_path
    if "/collections/" in url and url.startswith("http"):
        root, collection = url.split("/collections/", 1)
        items = _search_api(root, collection.strip("/").split("/")[0], bbox, interval, None, policy)
    else:
        items = _static_items(url, bbox, interval, policy)
    items = [i for i in items if _property_filter(properties)(i.properties)]
    if not items:
        raise NoDataAvailable("no STAC items at the URL in the requested extent", argument="url")
    if not policy.trusted_caller:
        check_many(asset_hrefs(items, bands), policy)
    return _load_items(items, bands, bands, bbox, None, None, chunk)
