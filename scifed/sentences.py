"""The node's own sentences — a policy decision's reason, a delivery refusal, an alert's
reason, a note of a result's disclosure checks — as a message key plus its fields, in
English and Chinese.

A sentence is made with :func:`say`, which returns a :class:`Said`: a ``str`` whose text
is the English sentence exactly as the node has always written it, so the CLI, the logs,
the audit chain and every record that stores the text read as before, and which also
keeps its key and fields. Where the sentence is stored or sent on, its structure goes
beside the text (:func:`structure`, a small JSON dict), and a console renders it in the
page's language with :meth:`scifed.web.i18n.Translator.said`; a record made before the
sentence had a key shows its stored English text.

In a template a field marked ``!t`` is a word the node sends as data (a delivery
method, a state), shown through :meth:`~scifed.web.i18n.Translator.term` in the page's
language; a field that is itself a :class:`Said` (a decision's source) is rendered in the
same language. Names and numbers (datasets, researchers, grades) are data and shown as
they are. Every key of this catalog is registered with :func:`scifed.web.i18n.register`
under ``said.``, so the catalog check covers both languages.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

from scifed.web import i18n

PREFIX = "said."

# key -> (English, Chinese). The English text is the node's sentence as it has always
# read; changing it changes what the CLI and the logs say.
CATALOG: dict[str, tuple[str, str]] = {
    # where a policy value comes from (node/policy.py)
    "src.cell": ("default {grade}/{category} (governance §2.6)",
                 "{grade}/{category} 默认值（治理规范 §2.6）"),
    "src.override": ("override {source}", "覆盖（{source}）"),
    "src.override_bare": ("override", "覆盖"),
    "src.auditing": ("default with query auditing ({src})", "开启查询审计后的默认值（{src}）"),
    # the policy's decision on a task (node/policy.py decide)
    "dec.forbidden": ("{job_type} jobs are forbidden on {grade}/{category} data ({src})",
                      "{grade}/{category} 数据禁止 {job_type} 作业（{src}）"),
    "dec.approval_expired": ("the dataset's {type} approval {ref} expired on {expires}",
                             "该数据集的 {type} 批准 {ref} 已于 {expires} 过期"),
    "dec.embargo": ("the dataset is under embargo until {embargo}",
                    "该数据集在 {embargo} 之前处于禁发期"),
    "dec.min_nodes": ("the job has {n} node(s); {grade}/{category} data needs at least "
                      "{least} ({src})",
                      "该作业有 {n} 个节点；{grade}/{category} 数据至少需要 {least} 个（{src}）"),
    "dec.fl_dp": ("{grade}/{category} data trains only with DP-SGD; give the job dp.epsilon",
                  "{grade}/{category} 数据只能以 DP-SGD 训练；请为作业设置 dp.epsilon"),
    "dec.fl_cap": ("dp.epsilon {eps} exceeds the training cap ε={cap} ({src})",
                   "dp.epsilon {eps} 超过训练上限 ε={cap}（{src}）"),
    "dec.dp_budget": ("{grade}/{category} data answers under differential privacy only with "
                      "a per-query ε cap and an annual budget set by its officer, and this "
                      "dataset has none; drop dp (exact answers, under the disclosure rules)",
                      "{grade}/{category} 数据仅在数据官设定了每次查询 ε 上限和年度预算时才以"
                      "差分隐私回答，而此数据集没有设定；请去掉 dp（按披露控制规则给出精确结果）"),
    "dec.dp_needs_eps": ("differential privacy needs an ε", "差分隐私需要给定 ε"),
    "dec.eps_cap": ("requested ε={eps} exceeds the per-query cap ε={cap} ({src})",
                    "申请的 ε={eps} 超过每次查询上限 ε={cap}（{src}）"),
    "dec.needs_approval": ("{job_type} on {grade}/{category} needs approval ({src})",
                           "{grade}/{category} 上的 {job_type} 作业需要审批（{src}）"),
    "dec.policy_approval": ("the dataset's policy requires the officer's approval",
                            "该数据集的策略要求数据官审批"),
    "dec.allowed": ("allowed ({src})", "允许（{src}）"),
    # an alert's reason (node/alerts.py), and a job held for it (node/gate.py)
    "alert.allowance": ("{total} refused queries this year (allowance {allowance})",
                        "本年度 {total} 次被拒查询（允许 {allowance} 次）"),
    "alert.run": ("{streak} refused queries in a row (limit {run})",
                  "连续 {streak} 次被拒查询（上限 {run} 次）"),
    "alert.held": ("alert: {alert}", "告警：{alert}"),
    # a held access request (node/delivery/desk.py)
    "access.held": ("{method} of {columns} for: {purpose}",
                    "{method!t}（{columns}），用途：{purpose}"),
    "access.all_columns": ("all columns", "全部字段"),
    # whether a dataset may be delivered (node/delivery/rules.py)
    "rule.never": ("{cell} data is never delivered ({grade} is important or core data); "
                   "federated jobs are its only use",
                   "{cell} 数据从不交付（{grade} 为重要或核心数据）；只能用于联邦作业"),
    "rule.closed": ("{cell} data is not delivered over the network; where its cell allows "
                    "it at all, the data officer arranges an offline transfer",
                    "{cell} 数据不通过网络交付；若其分级类别允许，由数据官安排线下交付"),
    "rule.service_checked": ("an in-node service on {cell} data needs the officer to check "
                             "every output before release, which the service does not "
                             "offer; use federated jobs",
                             "{cell} 数据的节点内服务要求数据官在发布前检查每个输出，而该服务"
                             "不提供此检查；请使用联邦作业"),
    "rule.forbidden": ("{method} is forbidden for {cell} data (governance §2.6)",
                       "{cell} 数据禁止{method!t}（治理规范 §2.6）"),
    "rule.not_offered": ("the data officer does not offer {method} for this dataset (its "
                         "delivery methods: {methods})",
                         "数据官未为此数据集提供{method!t}（其交付方式：{methods}）"),
    "rule.embargo": ("the dataset is under embargo until {embargo}",
                     "该数据集在 {embargo} 之前处于禁发期"),
    "rule.auto": ("automatic for {method} of {cell} data", "{cell} 数据的{method!t}自动授权"),
    "rule.approves": ("the data officer approves {method} of {cell} data",
                      "{cell} 数据的{method!t}由数据官审批"),
    "rule.offline_never": ("{cell} data is never delivered, offline included",
                           "{cell} 数据从不交付，线下交付亦然"),
    "rule.offline_only": ("{cell}: an offline transfer recorded by the officer is its only "
                          "delivery", "{cell}：唯一的交付方式是由数据官登记的线下交付"),
    "rule.no_delivery": ("{cell} data admits no delivery (governance §2.6)",
                         "{cell} 数据不允许任何交付（治理规范 §2.6）"),
    "rule.offline_forbidden": ("offline_transfer is forbidden for {cell} data (governance "
                               "§2.6)", "{cell} 数据禁止线下交付（治理规范 §2.6）"),
    "rule.offline_not_offered": ("the data officer does not offer offline_transfer for this "
                                 "dataset", "数据官未为此数据集提供线下交付"),
    "rule.offline": ("offline transfer of {cell} data, recorded by the officer",
                     "{cell} 数据的线下交付，由数据官登记"),
    # refusals of the delivery desk (node/delivery/desk.py)
    "desk.refuses": ("node {node} refuses {what}: {reason}", "节点 {node} 拒绝 {what}：{reason}"),
    "desk.what.method": ("{method} of {dataset}", "{dataset} 的{method!t}"),
    "desk.what.grant": ("grant {grant}", "授权 {grant}"),
    "desk.what.call": ("{call} under grant {grant}", "授权 {grant} 下的{call!t}"),
    "desk.what.query": ("query {sha}", "查询 {sha}"),
    "desk.what.offline": ("an offline transfer", "线下交付"),
    "desk.unknown_columns": ("no column {columns} in the dataset", "数据集中没有字段 {columns}"),
    "desk.conditions": ("the request does not accept the conditions of use {missing} (read "
                        "them with `scifed catalog show`)",
                        "申请未接受使用条件 {missing}（可用 `scifed catalog show` 查看）"),
    "desk.study": ("CONDITIONAL data is delivered within a study the dataset is in: name it "
                   "(--study)",
                   "CONDITIONAL 数据只在其所属的研究项目内交付：请指明研究项目（--study）"),
    "desk.live_grants": ("the researcher holds {live} live grants of this dataset, the most "
                         "one may hold ({most} live grants); use one of them (`scifed access "
                         "list`) or ask the officer to revoke those no longer needed",
                         "该研究者持有此数据集的 {live} 个有效授权，已达上限（{most} 个）；请使用"
                         "其中之一（`scifed access list`），或请数据官撤销不再需要的授权"),
    "desk.no_grant": ("there is no such grant at this node", "本节点没有此授权"),
    "desk.not_theirs": ("the grant is another researcher's", "该授权属于另一位研究者"),
    "desk.replayed": ("the call was made before (its nonce was seen): a signed call is "
                      "answered once", "该调用已出现过（其随机数已使用）：每个签名调用只回答一次"),
    "desk.wrong_method": ("the grant is for {granted}, not {method}",
                          "该授权用于{granted!t}，而不是{method!t}"),
    "desk.state": ("the grant is {state}", "该授权{state!t}"),
    "desk.expired": ("the grant expired", "该授权已过期"),
    "desk.unregistered": ("the dataset is no longer registered", "该数据集已不再登记"),
    "desk.needs_approval": ("the dataset now needs the officer's approval; request again",
                            "该数据集现在需要数据官审批；请重新申请"),
    "desk.unsealed": ("the query is not sealed to this node for this call",
                      "该查询未针对本次调用加密给本节点"),
    # refusals of the in-node service (node/delivery/service.py)
    "svc.aggregate_only": ("in-node service: {why}; on this dataset a query is an aggregate: "
                           "SELECT group columns and count/sum/avg/stddev/variance of columns "
                           "FROM data GROUP BY those columns",
                           "节点内服务：{why}；此数据集上的查询须为汇总：SELECT 分组字段及字段的 "
                           "count/sum/avg/stddev/variance，FROM data GROUP BY 这些分组字段"),
    "svc.not_grouped": ("column {column} is selected without being a group column (that "
                        "would return rows)",
                        "字段 {column} 被选出但不是分组字段（那将返回明细行）"),
    "svc.no_aggregate": ("the query computes no aggregate", "该查询没有计算任何汇总"),
    # a result's disclosure checks (node/release.py)
    "chk.pool.one": ("one contributor", "一个贡献方"),
    "chk.pool.two": ("two contributors in a two-member study", "两方研究中的两个贡献方"),
    "chk.pool.n": ("{n} contributors", "{n} 个贡献方"),
    "chk.pool.noised": ("every contribution noised", "每个贡献均已加噪"),
    "chk.release.exact": ("exact", "精确"),
    "chk.release.dp": ("dp", "差分隐私"),
    "chk.release.dp_at": ("dp at {nodes}", "在 {nodes} 加差分隐私噪声"),
    "chk.suppression": ("cells and statistics of fewer than k rows are suppressed by the job "
                        "type's release rules before this review",
                        "少于 k 行的单元格和统计量已在本次审核前按作业类型的发布规则隐去"),
    # why a result is held for output review (node/release.py)
    "review.own": ("the policy of {grade}/{category} data asks for the officer's output "
                   "review before a result leaves ({src})",
                   "{grade}/{category} 数据的策略要求结果发出前经数据官输出审核（{src}）"),
    "review.others": ("the policy of contributor {nodes} asks for its officer's output "
                      "review (each reviews it before this node seals it)",
                      "贡献方 {nodes} 的策略要求其数据官进行输出审核（本节点加密前由各方审核）"),
    "review.contributed": ("this node contributed {grade}/{category} data, whose policy asks "
                           "for the officer's output review ({src}); node {release_node} "
                           "releases the result",
                           "本节点贡献了 {grade}/{category} 数据，其策略要求数据官输出审核"
                           "（{src}）；由节点 {release_node} 发布结果"),
    "review.both": ("{first}; {second}", "{first}；{second}"),
    # the quality scorecard's thresholds and the details of its gates (scifed/scorecard.py,
    # node/scorecard/); a problem another library words (a parser's, mlcroissant's) is
    # a field shown as it came
    "qual.and": ("{first}; {second}", "{first}；{second}"),
    "qual.band.never": ("pass {ok} {good}; warn {below} {good} (never fails)",
                        "通过 {ok} {good}；警告 {below} {good}（不判为未通过）"),
    "qual.band.two": ("pass {ok} {good}; fail {below} {good}",
                      "通过 {ok} {good}；未通过 {below} {good}"),
    "qual.band.three": ("pass {ok} {good}; warn {at} {fair}; fail {worse} {fair}",
                        "通过 {ok} {good}；警告 {at} {fair}；未通过 {worse} {fair}"),
    "qual.check.Q2b": ("pass: the file parses, its header matches the schema and its sha256 "
                       "matches the catalog; fail otherwise",
                       "通过：文件可解析，表头与模式一致，且 sha256 与目录一致；否则未通过"),
    "qual.check.Q4c": ("pass: every shard has the same schema_hash; fail otherwise",
                       "通过：各分片的 schema_hash 相同；否则未通过"),
    "qual.check.Q7c": ("pass: 0 errors and 0 warnings; warn: warnings; fail: any error",
                       "通过：0 个错误且 0 个警告；警告：有警告；未通过：有任何错误"),
    "qual.check.Q8a": ("pass: a valid SPDX id, a URL or LicenseRef-SDN-*; fail: absent or "
                       "unknown",
                       "通过：有效的 SPDX 标识、网址或 LicenseRef-SDN-*；未通过：缺失或未知"),
    "qual.check.Q8c": ("pass: valid (grade, category), PI floor met, approvals on file and "
                       "current",
                       "通过：（分级，类别）有效，满足个人信息的分级下限，批准文件齐备且在有效期内"),
    "qual.check.Q10b": ("pass: no identifier detected while personal_info.status is none or "
                        "anonymized",
                        "通过：personal_info.status 为 none 或 anonymized 时未检测到标识符"),
    "qual.q7a_gate": ("fail (gate) if a required field is empty", "必填字段为空则未通过（门槛）"),
    "qual.na.unparsed": ("the data file does not parse", "数据文件无法解析"),
    "qual.na.federated": ("federated metric: computed across nodes by the quality job",
                          "联邦指标：由 quality 作业跨节点计算"),
    "qual.no_target": ("no target declared", "未声明目标字段"),
    "qual.no_rows": ("the file has no rows", "文件没有数据行"),
    "qual.q1a": ("{missing} missing of {cells} cells ({n} rows × {m} columns; null or a "
                 "declared missing code)",
                 "{cells} 个单元格中缺失 {missing} 个（{n} 行 × {m} 列；空值或声明的缺失代码）"),
    "qual.q1b": ("lowest: {worst} ({missing} missing) among {n} required field(s)",
                 "{n} 个必填字段中最低：{worst}（缺失 {missing} 个）"),
    "qual.q1b.none": ("no field declares constraints.required",
                      "没有字段声明 constraints.required"),
    "qual.q1c": ("target {target}: {missing} missing of {n}",
                 "目标字段 {target}：{n} 个中缺失 {missing} 个"),
    "qual.q3a": ("{distinct} distinct non-missing keys ({keys}) in {n} rows",
                 "{n} 行中有 {distinct} 个不同的非缺失键（{keys}）"),
    "qual.q3a.none": ("no key declared (no field with role id)",
                      "未声明键（没有角色为 id 的字段）"),
    "qual.q3b": ("{n} rows repeat an earlier row exactly", "{n} 行与之前某行完全相同"),
    "qual.q4a.none": ("no cross-field rules declared", "未声明跨字段规则"),
    "qual.q4b": ("{with_unit} of {n} numeric measurement fields declare a unit",
                 "{n} 个数值测量字段中有 {with_unit} 个声明了单位"),
    "qual.q4b.without": ("{detail}; none for: {fields}", "{detail}；未声明单位：{fields}"),
    "qual.q4b.none": ("no numeric measurement fields", "没有数值测量字段"),
    "qual.q5.regression": ("target {target} is numeric with more than {most} values "
                           "(regression)", "目标字段 {target} 为数值且取值超过 {most} 个（回归）"),
    "qual.q5.empty": ("target {target} has no values", "目标字段 {target} 没有取值"),
    "qual.q5a": ("{k} classes; entropy / ln {k}", "{k} 个类别；熵 / ln {k}"),
    "qual.q5b": ("largest {largest} {most}, smallest {smallest} {least}",
                 "最大类 {largest} {most}，最小类 {smallest} {least}"),
    "qual.q5c": ("class {label}", "类别 {label}"),
    "qual.q5d": ("{occur} of {n} declared classes occur", "{n} 个声明的类别中出现了 {occur} 个"),
    "qual.q5d.absent": ("{detail}; absent: {absent}", "{detail}；未出现：{absent}"),
    "qual.q5d.none": ("target {target} declares no enum", "目标字段 {target} 未声明枚举值"),
    "qual.q6": ("max over numeric features: {rates}", "各数值特征中的最大值：{rates}"),
    "qual.q6.none": ("no numeric feature", "没有数值特征"),
    "qual.q7b": ("{documented} of {n} fields documented", "{n} 个字段中有 {documented} 个有文档"),
    "qual.q7b.lacking": ("{detail}; lacking: {fields}", "{detail}；缺少：{fields}"),
    "qual.q8b": ("{present} of {n} provenance items", "{n} 项来源信息中有 {present} 项"),
    "qual.q8b.absent": ("{detail}; absent: {absent}", "{detail}；缺少：{absent}"),
    "qual.q11": ("{days} days since modified; {frequency} period {period} days",
                 "距上次修改 {days} 天；{frequency} 周期为 {period} 天"),
    "qual.q11.none": ("no update period (update_frequency {frequency})",
                      "没有更新周期（update_frequency {frequency}）"),
    "qual.q2b.unparsed": ("the file does not parse: {problem}", "文件无法解析：{problem}"),
    "qual.q2b.missing": ("columns missing from the file: {columns}", "文件中缺少字段：{columns}"),
    "qual.q2b.extra": ("columns not in the schema: {columns}", "不在模式中的字段：{columns}"),
    "qual.q2b.changed": ("the file changed since it was catalogued: sha256 {digest}… ≠ "
                         "{catalogued}", "文件自登记目录后已改变：sha256 {digest}… ≠ {catalogued}"),
    "qual.q2b.ok": ("the file parses, its {n} columns match the schema and its sha256 "
                    "matches the catalog",
                    "文件可解析，其 {n} 个字段与模式一致，且 sha256 与目录一致"),
    "qual.q7a.filled": ("{filled} of {total} fields filled", "已填写 {filled}/{total} 个字段"),
    "qual.q7a.required": ("{detail}; required but empty: {fields}",
                          "{detail}；必填但为空：{fields}"),
    "qual.q7a.recommended": ("{detail}; recommended but empty: {fields}",
                             "{detail}；建议填写但为空：{fields}"),
    "qual.q7c.warnings": ("{n} warning(s): {warnings}", "{n} 个警告：{warnings}"),
    "qual.q7c.ok": ("validates with mlcroissant without errors or warnings",
                    "经 mlcroissant 校验，无错误或警告"),
    "qual.q8a.none": ("no licence declared: the data cannot be reused lawfully",
                      "未声明许可协议：数据无法被合法复用"),
    "qual.q8a.not_network": ("{licence} is not a registered network licence "
                             "(LicenseRef-SDN-*)",
                             "{licence} 不是已登记的网络许可协议（LicenseRef-SDN-*）"),
    "qual.q8a.not_spdx": ("{licence} is not an SPDX licence identifier",
                          "{licence} 不是 SPDX 许可协议标识"),
    "qual.q8a.ok": ("licence {licence}", "许可协议 {licence}"),
    "qual.q8c.pair": ("{grade} {category} is not a valid (grade, category) pair",
                      "{grade} {category} 不是有效的（分级，类别）组合"),
    "qual.q8c.floor": ("{grade} is below the floor {floor} set by {reason}",
                       "{grade} 低于由 {reason} 设定的下限 {floor}"),
    "qual.q8c.no_approvals": ("approvals are required but none is on file",
                              "需要批准文件，但没有任何备案"),
    "qual.q8c.expired": ("expired approvals: {approvals}", "已过期的批准：{approvals}"),
    "qual.q8c.ok": ("{grade} {category}; PI {status}; {n} approval(s) on file",
                    "{grade} {category}；个人信息 {status}；已备案 {n} 项批准"),
    "qual.q10a.none": ("no quasi-identifiers declared", "未声明准标识符"),
    "qual.q10a.share": ("share of rows in classes of fewer than k={k} rows over {columns}",
                        "按 {columns} 分组后，所在组少于 k={k} 行的行所占比例"),
    "qual.q10a.only_anonymized": ("{detail}; gate applies only to data declared anonymized",
                                  "{detail}；该门槛仅适用于声明为已匿名化的数据"),
    "qual.q10b.declared": ("personal information is declared (status {status})",
                           "已声明含个人信息（状态 {status}）"),
    "qual.q10b.found": ("personal_info.status is {status}, but: {found}",
                        "personal_info.status 为 {status}，但：{found}"),
    "qual.q10b.ok": ("no column looks like a name, ID-card number, phone or email",
                     "没有字段看似姓名、身份证号、电话或电子邮件"),
    # a schema's generic problems, by pydantic error type (scifed/config.py
    # validation_problems); the English shown is pydantic's own message, these English
    # texts only name what the key says. A validator's own message has no key.
    "pyd.missing": ("Field required", "必填项"),
    "pyd.extra_forbidden": ("Extra inputs are not permitted", "不允许此项（不是该处的参数）"),
    "pyd.string_type": ("Input should be a valid string", "应为文本"),
    "pyd.int_type": ("Input should be a valid integer", "应为整数"),
    "pyd.int_parsing": ("Input should be a valid integer", "应为整数"),
    "pyd.int_from_float": ("Input should be a valid integer", "应为整数，不能有小数部分"),
    "pyd.float_type": ("Input should be a valid number", "应为数值"),
    "pyd.float_parsing": ("Input should be a valid number", "应为数值"),
    "pyd.finite_number": ("Input should be a finite number", "应为有限数值"),
    "pyd.bool_type": ("Input should be a valid boolean", "应为布尔值（true 或 false）"),
    "pyd.bool_parsing": ("Input should be a valid boolean", "应为布尔值（true 或 false）"),
    "pyd.list_type": ("Input should be a valid list", "应为列表"),
    "pyd.tuple_type": ("Input should be a valid tuple", "应为元组"),
    "pyd.dict_type": ("Input should be a valid dictionary", "应为映射（键: 值）"),
    "pyd.literal_error": ("Input should be one of {choices}", "应为以下之一：{choices}"),
    "pyd.enum": ("Input should be one of {choices}", "应为以下之一：{choices}"),
    "pyd.greater_than": ("Input should be greater than {gt}", "应大于 {gt}"),
    "pyd.greater_than_equal": ("Input should be greater than or equal to {ge}",
                               "应大于或等于 {ge}"),
    "pyd.less_than": ("Input should be less than {lt}", "应小于 {lt}"),
    "pyd.less_than_equal": ("Input should be less than or equal to {le}", "应小于或等于 {le}"),
    "pyd.too_short": ("should have at least {min_length} item(s), not {actual_length}",
                      "至少应有 {min_length} 项，实际为 {actual_length} 项"),
    "pyd.too_long": ("should have at most {max_length} item(s), not {actual_length}",
                     "至多应有 {max_length} 项，实际为 {actual_length} 项"),
    "pyd.string_too_short": ("String should have at least {min_length} characters",
                             "至少应有 {min_length} 个字符"),
    "pyd.string_too_long": ("String should have at most {max_length} characters",
                            "至多应有 {max_length} 个字符"),
    # the researcher's side of an access request (coordinator/access_client.py, cli/ui)
    "access.accept": ("accept the dataset's conditions of use to request it: {missing}",
                      "请先接受该数据集的使用条件再申请：{missing}"),
    "access.purpose": ("say what you will use the data for (purpose)",
                       "请说明数据将用于什么（用途）"),
    # the job form's own problems (cli/ui/form.py)
    "form.at": ("{where}: {problem}", "{where}：{problem}"),
    "form.too_long": ("longer than {limit} bytes (the limit of a job spec)",
                      "超过 {limit} 字节（作业规格的上限）"),
    "form.not_mapping": ("expected a mapping of {type} parameters, got a {got}",
                         "应为 {type} 参数的映射（键: 值），实际为 {got}"),
}

i18n.register({PREFIX + key: pair for key, pair in CATALOG.items()})


class _English(string.Formatter):
    """Fills a sentence's English text: every field as its own text (a nested sentence's
    English, a word as the node sends it)."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value if conversion == "t" else super().convert_field(value, conversion)


_ENGLISH = _English()


class Said(str):
    """A sentence of the node: its English text, with its catalog ``key`` and ``fields``
    (numbers, names, words, or nested sentences) kept to render it in another language."""

    key: str
    fields: dict[str, Any]

    def __new__(cls, key: str, fields: Mapping[str, Any]) -> Said:
        try:
            english = CATALOG[key][0]
        except KeyError:
            raise KeyError(f"no sentence {key!r} in scifed/sentences.py") from None
        self = super().__new__(cls, _ENGLISH.format(english, **fields))
        self.key, self.fields = key, dict(fields)
        return self

    def __reduce__(self):  # copies and pickles keep the key, fields and text
        return (worded, (str(self), self.key, self.fields))

    def structure(self) -> dict[str, Any]:
        return {"key": self.key, "fields": {
            name: v.structure() if isinstance(v, Said) else v for name, v in self.fields.items()}}


def say(key: str, **fields: Any) -> Said:
    """The sentence ``key`` of the catalog with its fields."""
    return Said(key, fields)


def worded(text: str, key: str, fields: Mapping[str, Any]) -> Said:
    """A sentence whose English is ``text`` as another library wrote it (pydantic's
    message), with the catalog ``key`` and ``fields`` that say it in another language."""
    if key not in CATALOG:
        raise KeyError(f"no sentence {key!r} in scifed/sentences.py")
    self = str.__new__(Said, text)
    self.key, self.fields = key, dict(fields)
    return self


def pydantic_problem(err: Mapping[str, Any], message: str) -> str:
    """``message`` (pydantic's, for the error ``err`` of ``ValidationError.errors()``) as
    a sentence where its error type is a generic one (missing, wrong type, not one of the
    choices, out of range); a validator's own message stays plain text."""
    kind, ctx = err.get("type"), dict(err.get("ctx") or {})
    if f"pyd.{kind}" not in CATALOG:
        return message
    if kind in ("literal_error", "enum"):  # "'a', 'b' or 'c'": the choices as a list
        ctx = {"choices": str(ctx.get("expected", "")).replace(" or ", ", ")}
    ctx.pop("field_type", None)
    try:
        return worded(message, f"pyd.{kind}", ctx)
    except (KeyError, IndexError, ValueError):
        return message


def of_error(exc: BaseException) -> str:
    """What an error says: the sentence it was raised with (keeping its key and fields),
    else its text."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, Said) else str(exc)


def structure(text: object) -> dict[str, Any] | None:
    """What goes beside a sentence's text where it is stored or sent: its key and fields
    (JSON), or None for a plain text (a person's words, an older record)."""
    return text.structure() if isinstance(text, Said) else None


# the most a sentence's key and fields may take beside its text in a call's answer
MAX_SAID_JSON = 8192


def dumps(text: object) -> str:
    """A sentence's key and fields as JSON, to send beside its text where a call answers
    with text only (a task's refusal, a gRPC status); "" for a plain text or one too
    large to send."""
    shape = structure(text)
    if shape is None:
        return ""
    out = json.dumps(shape, ensure_ascii=False, separators=(",", ":"), default=str)
    return out if len(out.encode()) <= MAX_SAID_JSON else ""


def loads(text: str, raw: str | bytes | None) -> str:
    """``text`` as another party sent it, with the key and fields it sent beside it
    (:func:`dumps`): a :class:`Said` whose English stays ``text`` where the key is one
    this catalog knows, else ``text`` itself. What comes from another party is bounded
    and checked: anything unreadable, too large or unknown leaves the plain text."""
    if not raw or len(raw) > MAX_SAID_JSON:
        return text
    try:
        said = rebuild(json.loads(raw))
    except (ValueError, RecursionError):
        return text
    return text if said is None else worded(text, said.key, said.fields)


def rebuild(shape: object) -> Said | None:
    """A :class:`Said` from its :func:`structure` (as read back from a record or a reply);
    None where ``shape`` is not one this catalog knows (an older or a newer node's)."""
    if not (isinstance(shape, Mapping) and isinstance(shape.get("key"), str)
            and isinstance(shape.get("fields"), Mapping) and shape["key"] in CATALOG):
        return None
    fields = {}
    for name, v in shape["fields"].items():
        if isinstance(v, Mapping):
            v = rebuild(v)
            if v is None:
                return None
        fields[str(name)] = v
    try:
        return Said(shape["key"], fields)
    except (KeyError, IndexError, ValueError):
        return None
