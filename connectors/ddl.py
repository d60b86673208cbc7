"""The source exchange views (前置库视图), govshare's own copy of the contract DDL.

Portable SQL that loads unchanged into SQLite, PostgreSQL and MySQL/MariaDB. The demo generator
and the contract tests create source tables from it; connectors never need it to read.
"""

from __future__ import annotations

import re

TABLES = ("population_person", "legal_entity", "e_license")

SOURCE_DDL = """\
-- Reference exchange views (前置库视图) that the three source departments expose to govshare.
--
-- This is the contract between govshare and its sources. A bureau whose tables use other
-- names (for example the GB/T 36903 element codes ZZBS, CZZTDM, ...) maps them to these
-- canonical names in the catalog; govshare itself only ever speaks the canonical names.
--
-- Portable SQL: it must load unchanged into SQLite, PostgreSQL and MySQL/MariaDB.
-- Every view carries:
--   updated_at  the time the row last changed at the source (local time, no zone: Asia/Shanghai).
--               Several rows may share one updated_at; rows can be committed late with an
--               updated_at at or before the last value already read.
--   is_deleted  1 when the source has withdrawn the record (soft delete), else 0.
-- Codes are text, never numbers: leading zeros matter.

-- 人口基础信息 (population base data)
CREATE TABLE population_person (
    id_number               VARCHAR(18)  NOT NULL,  -- 公民身份号码, GB 11643 (18 chars; legacy 15-digit numbers still occur)
    name                    VARCHAR(64)  NOT NULL,  -- 姓名
    sex_code                CHAR(1),                -- 性别代码, GB/T 2261.1: 0 未知, 1 男, 2 女, 9 未说明
    ethnicity_code          CHAR(2),                -- 民族代码, GB/T 3304: 01..56, 97 其他, 98 外国血统
    birth_date              DATE,                   -- 出生日期
    household_division_code CHAR(6),                -- 户籍地行政区划代码, GB/T 2260
    household_address       VARCHAR(200),           -- 户籍地址
    phone                   VARCHAR(20),            -- 联系电话
    person_status           CHAR(1),                -- 人员状态: 1 正常, 2 死亡, 3 迁出, 4 注销
    updated_at              TIMESTAMP    NOT NULL,
    is_deleted              SMALLINT     NOT NULL DEFAULT 0,
    PRIMARY KEY (id_number)
);

-- 法人单位基础信息 (legal-entity base data)
CREATE TABLE legal_entity (
    uscc                       CHAR(18)     NOT NULL,  -- 统一社会信用代码, GB 32100
    entity_name                VARCHAR(200) NOT NULL,  -- 机构名称
    entity_type                VARCHAR(20),            -- 法人类型: 企业法人, 机关法人, 事业单位法人, 社会团体法人, 其他
    legal_rep_name             VARCHAR(64),            -- 法定代表人姓名
    legal_rep_id_type          CHAR(3),                -- 法定代表人证件类型代码: 111 居民身份证, 414 护照, ...
    legal_rep_id_number        VARCHAR(32),            -- 法定代表人证件号码
    registration_authority     VARCHAR(100),           -- 登记机关
    registration_division_code CHAR(6),                -- 登记地行政区划代码, GB/T 2260
    established_on             DATE,                   -- 成立日期
    registered_capital         DECIMAL(18,4),          -- 注册资本 (万元)
    business_scope             TEXT,                   -- 经营范围
    address                    VARCHAR(200),           -- 住所
    entity_status              VARCHAR(10),            -- 法人状态: 存续, 在业, 吊销, 注销, 迁出
    updated_at                 TIMESTAMP    NOT NULL,
    is_deleted                 SMALLINT     NOT NULL DEFAULT 0,
    PRIMARY KEY (uscc)
);

-- 电子证照 (electronic licenses), element names after GB/T 36903
CREATE TABLE e_license (
    license_id        VARCHAR(128) NOT NULL,  -- 证照标识 ZZBS, GB/T 36904: 1.2.156.3005.2.<类型代码>.<颁发机构代码>.<流水号>.<版本号>.<校验位>
    license_type_code VARCHAR(21),            -- 证照类型代码 ZZLXDM: USCC of the defining body + 3 digits
    license_name      VARCHAR(100),           -- 证照名称 ZZMC
    license_number    VARCHAR(64),            -- 证照编号 ZZBH
    holder_name       VARCHAR(200),           -- 持证主体 CZZT
    holder_id_type    CHAR(3),                -- 持证主体代码类型代码 CZZTDMLXDM: 111 公民身份号码, 001 统一社会信用代码, ...
    holder_id         VARCHAR(32),            -- 持证主体代码 CZZTDM
    issuer_name       VARCHAR(200),           -- 颁发机构 ZZBFJG
    issuer_code       CHAR(18),               -- 颁发机构代码 ZZBFJGDM (USCC)
    issued_on         DATE,                   -- 颁发日期 ZZBFRQ
    valid_from        DATE,                   -- 有效期起始日期
    valid_until       DATE,                   -- 有效期截止日期 (NULL: 长期有效)
    license_status    CHAR(2),                -- 证照状态: 10 有效, 01 已换发, 02 已过期, 03 已注销, 04 已撤销, 05 已吊销, 09 其他
    updated_at        TIMESTAMP    NOT NULL,
    is_deleted        SMALLINT     NOT NULL DEFAULT 0,
    PRIMARY KEY (license_id)
);
"""

_COMMENT = re.compile(r"--[^\n]*")
_CREATE = re.compile(r"CREATE\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


def statements() -> tuple[str, ...]:
    """The DDL as single statements, comments removed (they contain semicolons)."""
    bare = _COMMENT.sub("", SOURCE_DDL)
    return tuple(s.strip() for s in bare.split(";") if s.strip())


def create_table_sql(table: str) -> str:
    """The CREATE TABLE statement of one source view."""
    for statement in statements():
        match = _CREATE.match(statement)
        if match and match.group(1) == table:
            return statement
    raise KeyError(table)
