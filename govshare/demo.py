"""Demo source databases: three SQLite files with valid rows and a known share of defects.

``govshare demo-data`` writes population.db, legal_entity.db and e_license.db from the contract
DDL (connectors/ddl.py). Everything is synthetic and deterministic per seed (and ``as_of``):
ID numbers, credit codes and license ids are generated with their standards' check characters
(computed by validation.identifiers, the same functions the validators use), names and addresses
are drawn from small word lists; no real person's record is used.

Where each dataset is read from comes from the catalog (common.catalog.load_catalog): the
connection id, the source table, the key field and the fields' source column names. The
generators make the contract views' rows under the fields' canonical names; the writer stores
them under the catalog's names.

Every defective row carries exactly one defect of a known kind, so the counts in the result are
exact and tests can check the quarantine row by row (``DemoSources.defect_keys``). Valid rows
include forms that need normalising but are valid: lowercase ``x`` check characters, legacy
15-digit ID numbers, lowercase credit codes and license ids, keys with surrounding spaces.
A handful of valid rows are soft-deleted (``is_deleted = 1``); they are counted as ``deleted``,
neither valid nor defective.

Generation is vectorised (numpy for the arithmetic, Arrow compute for the text) and the rows are
written with ADBC's bulk ingest: a million population rows take seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from common.catalog import Catalog, Dataset, load_catalog
from common.errors import ConfigError
from common.schema import IS_DELETED, UPDATED_AT
from common.times import SOURCE_ZONE
from validation.identifiers import (
    ALNUM36,
    ID_CHECK_CHARS,
    LICENSE_PREFIX,
    USCC_ALPHABET,
    gb11714_check_bytes,
    id_check_bytes,
    license_check_bytes,
    uscc_check_bytes,
)
from validation.rules import normalise_keys

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

DEFAULT_ROWS = 2000
DEFAULT_SEED = 20261127
MIN_ROWS = 100
DEFECT_SHARE = 0.05

POPULATION_DEFECTS = (
    "wrong_check_char",  # ID number: MOD 11-2 check character wrong
    "impossible_date",  # ID number with 30 Feb & co, check character right for the body
    "unknown_sex_code",  # sex_code outside GB/T 2261.1
    "blank_name",
    "future_birth_date",  # birth date (in the ID and in birth_date) after the record date
    "birth_date_mismatch",  # birth_date differs from the ID's date
    "sex_mismatch",  # sex_code 1/2 disagrees with the ID's sex digit
)
LEGAL_ENTITY_DEFECTS = ("wrong_check_char", "negative_capital", "blank_name", "unknown_status")
E_LICENSE_DEFECTS = ("wrong_check_char", "valid_until_before_valid_from", "holder_id_invalid")
DEFECTS: Mapping[str, tuple[str, ...]] = {
    "population": POPULATION_DEFECTS,
    "legal_entity": LEGAL_ENTITY_DEFECTS,
    "e_license": E_LICENSE_DEFECTS,
}

# GB/T 2260 county-level codes: (code, province, city, district).
DIVISIONS: tuple[tuple[str, str, str, str], ...] = (
    ("110101", "北京市", "", "东城区"),
    ("110102", "北京市", "", "西城区"),
    ("110105", "北京市", "", "朝阳区"),
    ("110108", "北京市", "", "海淀区"),
    ("120101", "天津市", "", "和平区"),
    ("120104", "天津市", "", "南开区"),
    ("310101", "上海市", "", "黄浦区"),
    ("310104", "上海市", "", "徐汇区"),
    ("310115", "上海市", "", "浦东新区"),
    ("320102", "江苏省", "南京市", "玄武区"),
    ("320106", "江苏省", "南京市", "鼓楼区"),
    ("330102", "浙江省", "杭州市", "上城区"),
    ("330106", "浙江省", "杭州市", "西湖区"),
    ("350102", "福建省", "福州市", "鼓楼区"),
    ("370202", "山东省", "青岛市", "市南区"),
    ("410105", "河南省", "郑州市", "金水区"),
    ("420106", "湖北省", "武汉市", "武昌区"),
    ("430104", "湖南省", "长沙市", "岳麓区"),
    ("440103", "广东省", "广州市", "荔湾区"),
    ("440106", "广东省", "广州市", "天河区"),
    ("440304", "广东省", "深圳市", "福田区"),
    ("440305", "广东省", "深圳市", "南山区"),
    ("500103", "重庆市", "", "渝中区"),
    ("510104", "四川省", "成都市", "锦江区"),
    ("510107", "四川省", "成都市", "武侯区"),
    ("530102", "云南省", "昆明市", "五华区"),
    ("610113", "陕西省", "西安市", "雁塔区"),
)
SURNAMES = tuple(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
) + ("欧阳", "司马", "上官", "诸葛")
GIVEN = tuple("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志文斌宇浩凯佳欣怡晨子涵梓萱雨轩一诺思远博文嘉乐若溪")
STREETS = tuple(
    ("人民路", "解放路", "中山路", "建设路", "和平路", "新华街", "文化路", "胜利路", "光明街", "长安街", "滨江路", "学府路")
)
WORDS = tuple("华兴达鑫盛隆恒泰瑞丰宏远新创博锦鸿嘉诚信安顺发源汇通")
INDUSTRIES = ("科技", "贸易", "建设工程", "餐饮管理", "物流", "信息技术", "文化传媒", "医疗器械", "农业开发", "咨询服务")
SCOPES = (
    "技术开发、技术咨询、技术服务",
    "销售日用百货、五金交电",
    "餐饮服务",
    "道路普通货物运输",
    "房屋建筑工程施工",
    "软件开发；信息系统集成服务",
    "企业管理咨询；会议及展览服务",
    "农产品种植、销售",
    "医疗器械经营（依法须经批准的项目，经相关部门批准后方可开展经营活动）",
    "广告设计、制作、代理、发布",
)
# (authority+type chars, entity_type, name suffix, registration authority suffix, share)
ORG_KINDS: tuple[tuple[str, str, str, str, float], ...] = (
    ("91", "企业法人", "有限公司", "市场监督管理局", 0.70),
    ("92", "其他", "经营部", "市场监督管理局", 0.08),
    ("93", "其他", "专业合作社", "市场监督管理局", 0.04),
    ("11", "机关法人", "管理办公室", "机构编制委员会办公室", 0.06),
    ("12", "事业单位法人", "服务中心", "机构编制委员会办公室", 0.06),
    ("51", "社会团体法人", "协会", "民政局", 0.04),
    ("52", "其他", "培训学校", "民政局", 0.02),
)
ENTITY_STATUSES = (("存续", 0.70), ("在业", 0.20), ("吊销", 0.04), ("注销", 0.04), ("迁出", 0.02))
UNKNOWN_STATUSES = ("歇业", "正常", "停业", "active")
# (license name, type code suffix, holder kind, validity in years (0: long-term), issuing department, number prefix)
LICENSE_TYPES: tuple[tuple[str, str, str, int, str, str], ...] = (
    ("营业执照", "001", "entity", 0, "市场监督管理局", "YYZZ"),
    ("食品经营许可证", "002", "entity", 5, "市场监督管理局", "JY"),
    ("道路运输经营许可证", "003", "entity", 4, "交通运输局", "DLYS"),
    ("建筑业企业资质证书", "004", "entity", 5, "住房和城乡建设局", "D"),
    ("结婚证", "011", "person", 0, "民政局", "J"),
    ("出生医学证明", "012", "person", 0, "卫生健康委员会", "CS"),
    ("残疾人证", "013", "person", 10, "残疾人联合会", "CJ"),
    ("机动车驾驶证", "014", "person", 6, "公安局交通警察支队", "JSZ"),
    ("不动产权证书", "015", "person", 0, "自然资源和规划局", "BDC"),
)



@dataclass(frozen=True)
class DatasetCounts:
    rows: int
    valid: int  # valid and not deleted (includes rows that need normalising)
    defective: int  # exactly one defect each
    deleted: int  # valid keys, is_deleted = 1
    by_defect: Mapping[str, int]
    needs_normalisation: Mapping[str, int]  # valid rows per normalisation kind


@dataclass(frozen=True)
class DemoSources:
    directory: Path
    paths: Mapping[str, Path]  # dataset id -> SQLite file
    connections: Mapping[str, str]  # dataset id -> Airflow connection id (the catalog's)
    counts: Mapping[str, DatasetCounts]
    defect_keys: Mapping[tuple[str, str], frozenset[str]]  # (dataset, defect kind) -> normalised keys
    deleted_keys: Mapping[str, frozenset[str]]  # dataset -> normalised keys with is_deleted = 1
    variant_keys: Mapping[tuple[str, str], frozenset[str]]  # (dataset, normalisation kind) -> normalised keys
    as_of: datetime
    seed: int

    @property
    def population(self) -> Path:
        return self.paths["population"]

    @property
    def legal_entity(self) -> Path:
        return self.paths["legal_entity"]

    @property
    def e_license(self) -> Path:
        return self.paths["e_license"]

    def connection_uris(self) -> dict[str, str]:
        """Airflow connection id -> URI, e.g. {'population_db': 'sqlite:////abs/population.db'}."""
        return {self.connections[ds]: f"sqlite:///{path.resolve()}" for ds, path in self.paths.items()}

    def environment(self) -> dict[str, str]:
        """The AIRFLOW_CONN_* variables that point the datasets at these files."""
        return {f"AIRFLOW_CONN_{conn.upper()}": uri for conn, uri in self.connection_uris().items()}

    def summary_lines(self) -> list[str]:
        """What ``govshare demo-data`` prints: counts (no row content) and the connection URIs."""
        lines = []
        for ds, c in self.counts.items():
            defects = ", ".join(f"{k} {v}" for k, v in c.by_defect.items())
            lines.append(f"{ds}: {c.rows} rows, {c.valid} valid, {c.defective} defective ({defects}), {c.deleted} deleted")
        lines += [f"export {name}='{uri}'" for name, uri in self.environment().items()]
        return lines


def write_demo_sources(
    out_dir: Path,
    rows: int = DEFAULT_ROWS,
    seed: int = DEFAULT_SEED,
    *,
    as_of: datetime | None = None,
    catalog: Catalog | None = None,
) -> DemoSources:
    """Write population.db, legal_entity.db and e_license.db into out_dir (replacing them).

    rows population rows, rows // 2 legal entities, rows e-licenses. ``as_of`` (default: today
    00:00 Asia/Shanghai) anchors updated_at (the 30 days before it) and what counts as future.
    ``catalog`` (default: ``load_catalog()``) says each dataset's connection, table, key and columns.
    """
    import numpy as np

    if rows < MIN_ROWS:
        raise ConfigError(f"demo data needs at least {MIN_ROWS} rows, not {rows}")
    catalog = catalog if catalog is not None else load_catalog()
    datasets = {ds: catalog.dataset(ds) for ds in DEFECTS}
    if as_of is None:
        as_of = datetime.now(SOURCE_ZONE).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    people = _population(np.random.default_rng([seed, 1]), rows, as_of)
    entities = _legal_entities(np.random.default_rng([seed, 2]), rows // 2, as_of, people)
    licenses = _licenses(np.random.default_rng([seed, 3]), rows, as_of, people, entities)

    paths: dict[str, Path] = {}
    counts: dict[str, DatasetCounts] = {}
    defect_keys: dict[tuple[str, str], frozenset[str]] = {}
    deleted_keys: dict[str, frozenset[str]] = {}
    variant_keys: dict[tuple[str, str], frozenset[str]] = {}
    for ds, gen in (("population", people), ("legal_entity", entities), ("e_license", licenses)):
        dataset = datasets[ds]
        paths[ds] = write_source(out_dir / f"{ds}.db", dataset, gen.table)
        counts[ds] = gen.counts()
        keys = published_keys(dataset, gen.table)
        for kind, mask in gen.defect_masks().items():
            defect_keys[(ds, kind)] = _keys_where(keys, mask)
        for kind, mask in gen.variants.items():
            variant_keys[(ds, kind)] = _keys_where(keys, mask)
        deleted_keys[ds] = _keys_where(keys, gen.roles == 1)
    return DemoSources(
        directory=out_dir,
        paths=paths,
        connections={ds: d.connection_id for ds, d in datasets.items()},
        counts=counts,
        defect_keys=defect_keys,
        deleted_keys=deleted_keys,
        variant_keys=variant_keys,
        as_of=as_of,
        seed=seed,
    )


# -- building blocks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Generated:
    table: pa.Table  # the contract view's columns, under the fields' canonical names
    roles: np.ndarray  # 0 valid, 1 deleted, 2 + i defect kind i
    kinds: tuple[str, ...]
    identifiers: pa.Array  # each row's normalised ID number, USCC or license id (for references)
    variants: Mapping[str, np.ndarray]  # normalisation kind -> boolean mask

    def counts(self) -> DatasetCounts:
        import numpy as np

        by_role = np.bincount(self.roles, minlength=2 + len(self.kinds))
        return DatasetCounts(
            rows=len(self.roles),
            valid=int(by_role[0]),
            defective=int(by_role[2:].sum()),
            deleted=int(by_role[1]),
            by_defect={k: int(by_role[2 + i]) for i, k in enumerate(self.kinds)},
            needs_normalisation={k: int(m.sum()) for k, m in self.variants.items()},
        )

    def defect_masks(self) -> dict[str, np.ndarray]:
        return {k: self.roles == 2 + i for i, k in enumerate(self.kinds)}


def published_keys(dataset: Dataset, table: pa.Table) -> pa.Array:
    """The dataset's key (the catalog's key field) of each generated row, normalised as published."""
    if dataset.key not in table.column_names:
        raise ConfigError(
            f"dataset {dataset.id!r}: the demo generator makes no field {dataset.key!r} for the catalog's key",
            problems=[f"generated fields: {', '.join(table.column_names)}"],
        )
    return normalise_keys(dataset, table.column(dataset.key))


def _keys_where(keys: pa.Array, mask: np.ndarray) -> frozenset[str]:
    import pyarrow as pa

    return frozenset(keys.filter(pa.array(mask)).to_pylist())


def _other_symbols(rng: np.random.Generator, current: np.ndarray, alphabet: str) -> np.ndarray:
    """Another symbol of ``alphabet`` than each current one (ASCII bytes): a wrong check character."""
    import numpy as np

    symbols = _alphabet_codes(alphabet)
    index = np.zeros(256, dtype=np.int64)
    index[symbols] = np.arange(len(symbols))
    shift = rng.integers(1, len(symbols), size=len(current))
    return symbols[(index[current] + shift) % len(symbols)]


def _roles(rng: np.random.Generator, n: int, kinds: Sequence[str]) -> np.ndarray:
    """Row roles, shuffled: per defect kind an equal share of DEFECT_SHARE, a handful of deletes."""
    import numpy as np

    per_kind = max(1, round(n * DEFECT_SHARE / len(kinds)))
    deleted = max(2, n // 400)
    roles = np.zeros(n, dtype=np.int64)
    roles[:deleted] = 1
    for i in range(len(kinds)):
        start = deleted + i * per_kind
        roles[start : start + per_kind] = 2 + i
    return rng.permutation(roles)


def _pick(rng: np.random.Generator, n: int, weighted: Sequence[tuple[object, float]]) -> np.ndarray:
    import numpy as np

    weights = np.array([w for *_, w in weighted], dtype=float)
    return rng.choice(len(weighted), size=n, p=weights / weights.sum())


def _few(rng: np.random.Generator, eligible: np.ndarray, share: float) -> np.ndarray:
    """A random subset (mask) of the eligible rows, about share of all rows."""
    import numpy as np

    idx = np.flatnonzero(eligible)
    take = min(len(idx), max(1, round(len(eligible) * share)))
    mask = np.zeros(len(eligible), dtype=bool)
    mask[rng.choice(idx, size=take, replace=False)] = True
    return mask


def _take(choices: Sequence[str], idx: np.ndarray) -> pa.Array:
    import pyarrow as pa

    return pa.array(list(choices), pa.string()).take(pa.array(idx))


def _join(*parts: pa.Array | str) -> pa.Array:
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, "")


def _text(values: np.ndarray, width: int = 0) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    out = pa.array(values).cast(pa.string())
    return pc.utf8_lpad(out, width, "0") if width else out


def _ascii(codes: np.ndarray) -> pa.Array:
    """(n, w) ASCII codes -> n strings."""
    import numpy as np
    import pyarrow as pa

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return pa.array(codes.view(f"S{codes.shape[1]}").ravel()).cast(pa.string())


def _digit_codes(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers -> (n, width) zero-padded digit values 0..9."""
    import numpy as np

    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values.astype(np.int64)[:, None] // powers) % 10


def _alphabet_codes(alphabet: str) -> np.ndarray:
    import numpy as np

    return np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)


def _dates(days: np.ndarray) -> pa.Array:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'."""
    import numpy as np
    import pyarrow as pa

    return pa.array(days.astype(np.int32), pa.date32()).cast(pa.string())


def _null_where(arr: pa.Array, mask: np.ndarray) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)


def _where(mask: np.ndarray, then: pa.Array | str, other: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), then, other)


def _names(rng: np.random.Generator, n: int) -> pa.Array:
    surname = _take(SURNAMES, rng.integers(len(SURNAMES), size=n))
    first = _take(GIVEN, rng.integers(len(GIVEN), size=n))
    second = _take(GIVEN, rng.integers(len(GIVEN), size=n))
    second = _where(rng.random(n) < 0.3, "", second)
    return _join(surname, first, second)


def _addresses(rng: np.random.Generator, division: np.ndarray) -> pa.Array:
    n = len(division)
    place = _take([p + c + d for _, p, c, d in DIVISIONS], division)
    street = _take(STREETS, rng.integers(len(STREETS), size=n))
    number = _text(rng.integers(1, 300, size=n))
    building = _text(rng.integers(1, 30, size=n))
    room = _text(rng.integers(1, 30, size=n) * 100 + rng.integers(1, 6, size=n))
    return _join(place, street, number, "号", building, "栋", room, "室")


def _updated_at(rng: np.random.Generator, n: int, as_of: datetime) -> pa.Array:
    """Over the 30 days before as_of, drawn from a pool a third the size: many ties."""
    import numpy as np
    import pyarrow as pa

    start = int((as_of - timedelta(days=30) - datetime(1970, 1, 1)).total_seconds())
    pool = start + np.sort(rng.integers(0, 30 * 86400 - 60, size=max(1, n // 3)))
    seconds = pool[rng.integers(len(pool), size=n)]
    return pa.array(seconds, pa.timestamp("s")).cast(pa.string())


def _division_codes() -> np.ndarray:
    import numpy as np

    return np.array([int(code) for code, *_ in DIVISIONS], dtype=np.int64)


def _epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _repeats(keys: np.ndarray) -> np.ndarray:
    """Mask of the entries of a 1-D integer array that repeat an earlier entry."""
    import numpy as np

    _, first = np.unique(keys, return_index=True)
    dup = np.ones(len(keys), dtype=bool)
    dup[first] = False
    return dup


# -- population ----------------------------------------------------------------------------------


def _population(rng: np.random.Generator, n: int, as_of: datetime) -> _Generated:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = POPULATION_DEFECTS
    roles = _roles(rng, n, kinds)
    role = {k: roles == 2 + i for i, k in enumerate(kinds)}
    today = _epoch_day(as_of.date())

    division = rng.integers(len(DIVISIONS), size=n)
    birth = rng.integers(_epoch_day(date(1940, 1, 1)), _epoch_day(date(2008, 12, 31)), size=n)
    future = role["future_birth_date"]
    birth[future] = today + rng.integers(30, 3 * 365, size=int(future.sum()))
    days = birth.astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    impossible = role["impossible_date"]
    bad_md = np.array([(2, 30), (2, 31), (4, 31), (6, 31), (9, 31), (11, 31)])[rng.integers(6, size=int(impossible.sum()))]
    month[impossible], day[impossible] = bad_md[:, 0], bad_md[:, 1]

    division_code = _division_codes()[division]
    prefix = division_code * 10**8 + year * 10**4 + month * 100 + day  # 14 digits
    sequence = rng.integers(0, 1000, size=n)
    while True:  # the 17-digit body is unique: draw new sequence numbers for repeats
        body = prefix * 1000 + sequence
        dup = _repeats(body)
        if not dup.any():
            break
        sequence[dup] = rng.integers(0, 1000, size=int(dup.sum()))
    digits = (_digit_codes(body, 17) + 48).astype(np.uint8)  # ASCII
    check = id_check_bytes(digits)
    wrong = role["wrong_check_char"]
    check[wrong] = _other_symbols(rng, check[wrong], ID_CHECK_CHARS)
    id18 = _ascii(np.column_stack([digits, check]))

    valid = roles == 0
    male = sequence % 2 == 1
    sex = np.where(male, 1, 2)
    sex[_few(rng, valid, 0.005)] = 9
    sex[role["sex_mismatch"]] = 3 - sex[role["sex_mismatch"]]
    sex_code = _take("0123456789", sex)
    unknown = role["unknown_sex_code"]
    sex_code = _where(unknown, _take(("3", "4", "5", "8"), rng.integers(4, size=n)), sex_code)

    birth_date_days = birth.copy()
    mismatch = role["birth_date_mismatch"]
    birth_date_days[mismatch] -= rng.integers(1, 400, size=int(mismatch.sum()))
    birth_date = _null_where(_dates(birth_date_days), impossible | _few(rng, valid, 0.01))

    # Valid forms that need normalising: each on its own rows.
    lower_x = _few(rng, valid & (check == ord("X")), 0.01)
    legacy = _few(rng, valid & ~lower_x & (year < 2000), 0.01)
    spaced = _few(rng, valid & ~lower_x & ~legacy, 0.01)
    id_number = _where(lower_x, pc.utf8_lower(id18), id18)
    id15 = _ascii(np.column_stack([digits[:, :6], digits[:, 8:17]]))
    id_number = _where(legacy, id15, id_number)
    id_number = _where(spaced, _join(" ", id18, "  "), id_number)

    name = _names(rng, n)
    blank = role["blank_name"]
    name = _where(blank, _take(("", "   "), rng.integers(2, size=n)), name)
    ethnicity = np.where(rng.random(n) < 0.92, 1, rng.integers(2, 57, size=n))
    ethnicity[_few(rng, valid, 0.002)] = 97
    moved = rng.random(n) < 0.2
    household = np.where(moved, rng.integers(len(DIVISIONS), size=n), division)
    phone = _join("1", _take("35789", rng.integers(5, size=n)), _text(rng.integers(0, 10**9, size=n), 9))
    status = _pick(rng, n, (("1", 0.95), ("2", 0.02), ("3", 0.02), ("4", 0.01)))

    table = pa.table(
        {
            "id_number": id_number,
            "name": name,
            "sex_code": sex_code,
            "ethnicity_code": _text(ethnicity, 2),
            "birth_date": birth_date,
            "household_division_code": _take([code for code, *_ in DIVISIONS], household),
            "household_address": _addresses(rng, household),
            "phone": _null_where(phone, rng.random(n) < 0.1),
            "person_status": _take("1234", status),
            "updated_at": _updated_at(rng, n, as_of),
            "is_deleted": pa.array((roles == 1).astype(np.int64)),
        }
    )
    return _Generated(
        table=table,
        roles=roles,
        kinds=kinds,
        identifiers=id18,
        variants={"lowercase_x": lower_x, "legacy_15_digit": legacy, "surrounding_spaces": spaced},
    )


def _valid_people(people: _Generated) -> tuple[pa.Array, pa.Array]:
    """Normalised ID numbers and names of valid, not deleted persons (holders, representatives)."""
    import pyarrow as pa

    keep = pa.array(people.roles == 0)
    return people.identifiers.filter(keep), people.table.column("name").combine_chunks().filter(keep)


# -- legal entities ------------------------------------------------------------------------------


def _uscc_codes(
    rng: np.random.Generator, kind_chars: Sequence[str], kind: np.ndarray, division_codes: np.ndarray
) -> np.ndarray:
    """(n, 18) ASCII codes of unique USCCs (GB 11714 and GB 32100 check characters included).

    kind_chars: the registration authority + organisation type pairs ('91', '11', ...); kind
    indexes them per row.
    """
    import numpy as np

    n = len(division_codes)
    alpha = {c: i for i, c in enumerate(USCC_ALPHABET)}
    symbols = _alphabet_codes(USCC_ALPHABET)
    codes = np.empty((n, 18), dtype=np.uint8)
    codes[:, :2] = np.array([list(pair.encode("ascii")) for pair in kind_chars], dtype=np.uint8)[kind]
    codes[:, 2:8] = _digit_codes(division_codes, 6) + 48
    style_ma = rng.random(n) < 0.5  # newer codes: 'MA' + 6 alphanumerics; older ones: 8 digits
    org_values = np.empty((n, 8), dtype=np.int64)  # USCC alphabet indexes of the organisation codes
    redraw = np.ones(n, dtype=bool)
    while redraw.any():  # draw new organisation codes for repeats only
        k = int(redraw.sum())
        org = rng.integers(0, 10, size=(k, 8))
        ma = style_ma[redraw]
        org[ma, 2:] = rng.integers(0, len(USCC_ALPHABET), size=(int(ma.sum()), 6))
        org[ma, 0], org[ma, 1] = alpha["M"], alpha["A"]
        org_values[redraw] = org
        codes[redraw, 8:16] = symbols[org]
        codes[redraw, 16] = gb11714_check_bytes(codes[redraw, 8:16])
        org_key = org_values @ (31 ** np.arange(8, dtype=np.int64))
        redraw = _repeats(division_codes.astype(np.int64) * 31**8 + org_key)
    codes[:, 17] = uscc_check_bytes(codes[:, :17])
    return codes


def _code_strings(codes: np.ndarray) -> list[str]:
    """A small (n, w) ASCII matrix as Python strings."""
    return [row.tobytes().decode("ascii") for row in codes]


def _legal_entities(rng: np.random.Generator, m: int, as_of: datetime, people: _Generated) -> _Generated:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = LEGAL_ENTITY_DEFECTS
    roles = _roles(rng, m, kinds)
    role = {k: roles == 2 + i for i, k in enumerate(kinds)}
    valid = roles == 0

    org_kind = _pick(rng, m, ORG_KINDS)
    division = rng.integers(len(DIVISIONS), size=m)
    codes = _uscc_codes(rng, [k[0] for k in ORG_KINDS], org_kind, _division_codes()[division])
    wrong = role["wrong_check_char"]
    codes[wrong, 17] = _other_symbols(rng, codes[wrong, 17], USCC_ALPHABET)
    uscc = _ascii(codes)

    lower = _few(rng, valid, 0.01)
    spaced = _few(rng, valid & ~lower, 0.01)
    raw_uscc = _where(lower, pc.utf8_lower(uscc), uscc)
    raw_uscc = _where(spaced, _join("  ", uscc, " "), raw_uscc)

    city = _take([(c or p).removesuffix("市") for _, p, c, _ in DIVISIONS], division)
    word = _join(_take(WORDS, rng.integers(len(WORDS), size=m)), _take(WORDS, rng.integers(len(WORDS), size=m)))
    industry = _take(INDUSTRIES, rng.integers(len(INDUSTRIES), size=m))
    name = _join(city, word, industry, _take([k[2] for k in ORG_KINDS], org_kind))
    name = _where(role["blank_name"], _take(("", "  "), rng.integers(2, size=m)), name)

    rep_ids, rep_names = _valid_people(people)
    rep = rng.integers(len(rep_ids), size=m)
    passport = rng.random(m) < 0.05
    rep_type = _where(passport, "414", pa.array(["111"] * m))
    rep_id = _where(passport, _join("E", _text(rng.integers(0, 10**8, size=m), 8)), rep_ids.take(pa.array(rep)))

    capital_units = rng.lognormal(5, 1.6, size=m)  # 万元
    capital = np.round(capital_units * 10**4).astype(np.int64)
    capital[_few(rng, valid, 0.005)] = 123456789012345  # 12345678901.2345: 15 significant digits
    capital_text = _join(_text(capital // 10**4), ".", _text(capital % 10**4, 4))
    capital_text = _where(role["negative_capital"], _join("-", capital_text), capital_text)
    is_organ = np.array([k[0].startswith("1") for k in ORG_KINDS])[org_kind]
    capital_text = _null_where(capital_text, is_organ & ~role["negative_capital"])

    status = _take([s for s, _ in ENTITY_STATUSES], _pick(rng, m, ENTITY_STATUSES))
    unknown = _take(UNKNOWN_STATUSES, rng.integers(len(UNKNOWN_STATUSES), size=m))
    status = _where(role["unknown_status"], unknown, status)
    scope = _join(
        _take(SCOPES, rng.integers(len(SCOPES), size=m)), "；", _take(SCOPES, rng.integers(len(SCOPES), size=m)), "。"
    )
    today = _epoch_day(as_of.date())

    table = pa.table(
        {
            "uscc": raw_uscc,
            "entity_name": name,
            "entity_type": _take([k[1] for k in ORG_KINDS], org_kind),
            "legal_rep_name": _where(passport, _names(rng, m), rep_names.take(pa.array(rep))),
            "legal_rep_id_type": rep_type,
            "legal_rep_id_number": rep_id,
            "registration_authority": _join(city, "市", _take([k[3] for k in ORG_KINDS], org_kind)),
            "registration_division_code": _take([code for code, *_ in DIVISIONS], division),
            "established_on": _dates(rng.integers(_epoch_day(date(1985, 1, 1)), today - 1, size=m)),
            "registered_capital": capital_text,
            "business_scope": scope,
            "address": _addresses(rng, division),
            "entity_status": status,
            "updated_at": _updated_at(rng, m, as_of),
            "is_deleted": pa.array((roles == 1).astype(np.int64)),
        }
    )
    return _Generated(
        table=table,
        roles=roles,
        kinds=kinds,
        identifiers=uscc,
        variants={"lowercase": lower, "surrounding_spaces": spaced},
    )


# -- e-licenses ----------------------------------------------------------------------------------


def _ascii_rows(strings: Sequence[str]) -> np.ndarray:
    """Equal-length ASCII strings as an (n, w) byte matrix."""
    import numpy as np

    return np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint8).reshape(len(strings), -1)


def _license_middles(
    type_code: np.ndarray, issuer: np.ndarray, division_code: np.ndarray, by_division: np.ndarray, tail: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Type code (21) + issuer code + serial and version (tail, 14) as zero-padded ASCII rows, and their lengths.

    The issuer code is the 18-character USCC, or the 6-digit division code where by_division.
    """
    import numpy as np

    n = len(type_code)
    middle = np.zeros((n, 21 + 18 + 14), dtype=np.uint8)
    middle[:, :21] = type_code
    middle[:, 21:39] = issuer
    middle[:, 39:] = tail
    short = np.flatnonzero(by_division)
    middle[short, 21:27] = _digit_codes(division_code[short], 6) + 48
    middle[short, 27:41] = tail[short]
    middle[short, 41:] = 0
    return middle, np.where(by_division, 21 + 6 + 14, 21 + 18 + 14)


def _licenses(
    rng: np.random.Generator, n: int, as_of: datetime, people: _Generated, entities: _Generated
) -> _Generated:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = E_LICENSE_DEFECTS
    roles = _roles(rng, n, kinds)
    role = {k: roles == 2 + i for i, k in enumerate(kinds)}
    valid = roles == 0
    today = _epoch_day(as_of.date())

    # Defining bodies (central organs) and issuers (local departments): small tables of USCCs.
    body_rng = np.random.default_rng(36904)
    n_types, n_div = len(LICENSE_TYPES), len(DIVISIONS)
    central = np.full(n_types, 100000)
    definers = _uscc_codes(body_rng, ["11"], np.zeros(n_types, dtype=np.int64), central)
    type_bytes = np.column_stack([definers, _ascii_rows([t[1] for t in LICENSE_TYPES])])  # (n_types, 21)
    type_codes = _code_strings(type_bytes)
    issuer_bytes = _uscc_codes(
        body_rng, ["11"], np.zeros(n_types * n_div, dtype=np.int64), np.tile(_division_codes(), n_types)
    )
    issuers = _code_strings(issuer_bytes)

    person_types = np.array([i for i, t in enumerate(LICENSE_TYPES) if t[2] == "person"])
    license_type = rng.integers(len(LICENSE_TYPES), size=n)
    forced = role["holder_id_invalid"]
    license_type[forced] = rng.choice(person_types, size=int(forced.sum()))
    is_person = np.array([t[2] == "person" for t in LICENSE_TYPES])[license_type]
    division = rng.integers(n_div, size=n)
    issuer_idx = license_type * n_div + division
    division_issuer = rng.random(n) < 0.1  # some issuers use a 6-digit division code

    issued = today - rng.integers(1, 10 * 365, size=n)
    serial = np.empty(n, dtype=np.int64)
    serial[rng.permutation(n)] = np.arange(n)
    serial_year = issued.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    serial_code = serial_year * 10**7 + serial  # 11 digits, unique through the counter
    version = np.where(rng.random(n) < 0.9, 1, 2)

    # 校验位 (GB/T 36904) over 类型代码 + 颁发机构代码 + 流水号 + 版本号.
    middle, lengths = _license_middles(
        type_bytes[license_type], issuer_bytes[issuer_idx], _division_codes()[division], division_issuer,
        np.column_stack([_digit_codes(serial_code, 11), _digit_codes(version, 3)]) + 48,
    )
    check = license_check_bytes(middle, lengths)
    del middle
    wrong = role["wrong_check_char"]
    check[wrong] = _other_symbols(rng, check[wrong], ALNUM36)

    issuer_code = _where(
        division_issuer,
        _take([code for code, *_ in DIVISIONS], division),
        _take(issuers, issuer_idx),
    )
    license_id = _join(
        LICENSE_PREFIX,
        _take(type_codes, license_type),
        ".",
        issuer_code,
        ".",
        _text(serial_code, 11),
        ".",
        _text(version, 3),
        ".",
        _ascii(check[:, None]),
    )
    lower = _few(rng, valid, 0.01)
    spaced = _few(rng, valid & ~lower, 0.01)
    raw_id = _where(lower, pc.utf8_lower(license_id), license_id)
    raw_id = _where(spaced, _join(" ", license_id, " "), raw_id)

    person_ids, person_names = _valid_people(people)
    keep = pa.array(entities.roles == 0)
    entity_ids = entities.identifiers.filter(keep)
    entity_names = entities.table.column("entity_name").combine_chunks().filter(keep)
    person = pa.array(rng.integers(len(person_ids), size=n))
    entity = pa.array(rng.integers(len(entity_ids), size=n))
    holder_id = _where(is_person, person_ids.take(person), entity_ids.take(entity))
    holder_name = _where(is_person, person_names.take(person), entity_names.take(entity))
    # An invalid holder ID: a valid person's number with another check character.
    last = pc.index_in(pc.utf8_slice_codeunits(holder_id, 17, 18), value_set=pa.array(list(ID_CHECK_CHARS)))
    other = (last.fill_null(0).to_numpy(zero_copy_only=False) + rng.integers(1, 11, size=n)) % 11
    bad_id = _join(pc.utf8_slice_codeunits(holder_id, 0, 17), _take(ID_CHECK_CHARS, other))
    holder_id = _where(forced, bad_id, holder_id)

    years = np.array([t[3] for t in LICENSE_TYPES])[license_type]
    valid_from = issued.copy()
    valid_until = valid_from + years * 365
    backwards = role["valid_until_before_valid_from"]
    valid_until[backwards] = valid_from[backwards] - rng.integers(1, 365, size=int(backwards.sum()))
    long_term = (years == 0) & ~backwards
    expired = ~long_term & (valid_until < today)
    status = np.where(expired, "02", np.where(rng.random(n) < 0.95, "10", "01"))

    number_prefix = _take([t[5] for t in LICENSE_TYPES], license_type)
    issuer_name = _join(
        _take([p + c + d for _, p, c, d in DIVISIONS], division), _take([t[4] for t in LICENSE_TYPES], license_type)
    )
    table = pa.table(
        {
            "license_id": raw_id,
            "license_type_code": _take(type_codes, license_type),
            "license_name": _take([t[0] for t in LICENSE_TYPES], license_type),
            "license_number": _join(number_prefix, _text(rng.integers(0, 10**12, size=n), 12)),
            "holder_name": holder_name,
            "holder_id_type": _where(is_person, "111", pa.array(["001"] * n)),
            "holder_id": holder_id,
            "issuer_name": issuer_name,
            "issuer_code": issuer_code,
            "issued_on": _dates(issued),
            "valid_from": _dates(valid_from),
            "valid_until": _null_where(_dates(valid_until), long_term),
            "license_status": pa.array(status),
            "updated_at": _updated_at(rng, n, as_of),
            "is_deleted": pa.array((roles == 1).astype(np.int64)),
        }
    )
    return _Generated(
        table=table,
        roles=roles,
        kinds=kinds,
        identifiers=license_id,
        variants={"lowercase": lower, "surrounding_spaces": spaced},
    )


# -- writing -------------------------------------------------------------------------------------


def source_columns(dataset: Dataset) -> dict[str, str]:
    """Canonical field (and system column) name -> the source's column name, as the catalog maps them."""
    columns = {f.name: f.column for f in dataset.fields}
    columns[UPDATED_AT] = dataset.watermark_column
    columns[IS_DELETED] = dataset.deleted_column
    return columns


def write_source(path: Path, dataset: Dataset, table: pa.Table) -> Path:
    """Create the dataset's source table (the contract DDL) in a fresh file and bulk-insert the rows.

    The table and its columns are named as the catalog says the dataset reads them (a generated
    column the catalog does not list keeps its contract name). One transaction; rows go in key
    order: appending to the primary-key index is twice as fast as random inserts.
    """
    import adbc_driver_sqlite.dbapi as adbc

    from connectors.ddl import create_table_sql

    columns = source_columns(dataset)
    stored = table.rename_columns([columns.get(name, name) for name in table.column_names])
    try:
        create = create_table_sql(dataset.source_table)
    except KeyError:
        raise ConfigError(
            f"dataset {dataset.id!r} reads table {dataset.source_table!r}, which the contract DDL "
            "(connectors/ddl.py) does not define; demo data writes the contract's tables only"
        ) from None
    table_name, watermark = dataset.source_table, dataset.watermark_column
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with adbc.connect(str(partial), autocommit=True) as conn:
        with conn.cursor() as cursor:
            # A fresh file that only replaces the old one when complete: no journal needed.
            cursor.execute("PRAGMA journal_mode = OFF")
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.execute(create)
            cursor.execute(f'PRAGMA table_info("{table_name}")')
            _same_columns(dataset, [row[1] for row in cursor.fetchall()], stored.column_names)
            cursor.execute("BEGIN")
            cursor.adbc_ingest(table_name, stored.sort_by(columns[dataset.key]), mode="append")
            # Exchange views are read by updated_at: a bureau's 前置库 indexes it, and so do we.
            cursor.execute(f'CREATE INDEX "ix_{table_name}_{watermark}" ON "{table_name}" ("{watermark}")')
            cursor.execute("COMMIT")
    os.replace(partial, path)
    return path


def _same_columns(dataset: Dataset, contract: Sequence[str], stored: Sequence[str]) -> None:
    """The catalog's column names must be the contract table's."""
    missing, extra = sorted(set(stored) - set(contract)), sorted(set(contract) - set(stored))
    if missing or extra:
        raise ConfigError(
            f"dataset {dataset.id!r}: the catalog's columns do not match contract table {dataset.source_table!r}",
            problems=[f"not in the contract table: {', '.join(missing) or 'none'}",
                      f"in the contract table, not generated: {', '.join(extra) or 'none'}"],
        )
