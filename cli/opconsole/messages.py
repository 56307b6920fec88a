"""The operator console's interface text, in English and Chinese."""

from __future__ import annotations

from scifed.states import JobStatus, StudyStatus
from scifed.web import i18n

i18n.register({
    "op.title": ("Operator console", "运营方控制台"),
    "op.nav.nodes": ("Nodes", "节点"),
    "op.nav.studies": ("Studies", "联合研究"),
    "op.nav.jobs": ("Jobs", "任务"),
    "op.nav.revocations": ("Revocations", "证书吊销"),
    "op.live": ("Updated live every {s} s; last update {at} UTC.",
                "每 {s} 秒自动刷新；最近更新 {at}（UTC）。"),
    "op.unreachable": ("The coordinator did not answer; this page keeps asking.",
                       "协调方没有响应；本页面会持续重试。"),
    "op.nodes.title": ("Nodes", "节点"),
    "op.nodes.intro": ("Every node enrolled with the coordinator. A node is online while its "
                       "task stream is open and its heartbeats arrive; the audit head is the "
                       "latest position of its audit chain the coordinator recorded, and its "
                       "age is how long ago that head moved.",
                       "已在协调方注册的全部节点。节点的任务流保持连接且心跳按时到达即为在线；"
                       "审计链头是协调方记录的该节点审计链最新位置，其时长表示该链头距上次推进的时间。"),
    "op.nodes.summary": ("{online} of {total} nodes online", "{total} 个节点中 {online} 个在线"),
    "op.col.node": ("Node", "节点"),
    "op.col.platform": ("Platform", "平台"),
    "op.col.status": ("Status", "状态"),
    "op.col.last_seen": ("Last seen", "最近联系"),
    "op.col.version": ("Version", "版本"),
    "op.col.datasets": ("Datasets", "数据集"),
    "op.col.audit_head": ("Audit head", "审计链头"),
    "op.col.audit_age": ("Head age", "链头时长"),
    "op.online": ("online", "在线"),
    "op.offline": ("offline", "离线"),
    "op.never": ("never", "从未"),
    "op.ago": ("{age} ago", "{age}前"),
    "op.age.s": ("{n} s", "{n} 秒"),
    "op.age.min": ("{n} min", "{n} 分钟"),
    "op.age.h": ("{n} h", "{n} 小时"),
    "op.age.d": ("{n} d", "{n} 天"),
    "op.studies.title": ("Studies", "联合研究"),
    "op.studies.intro": ("Joint studies, the nodes invited and their answers, and the study "
                         "key's epoch (it moves each time the lead node makes a new key).",
                         "联合研究、受邀节点及其答复，以及研究密钥的版本（牵头节点每生成一次新密钥即递增）。"),
    "op.col.study": ("Study", "研究"),
    "op.col.purpose": ("Purpose", "目的"),
    "op.col.members": ("Members", "成员"),
    "op.col.accepted": ("Accepted / needed", "已接受 / 所需"),
    "op.col.key_epoch": ("Key epoch", "密钥版本"),
    "op.col.lead": ("Lead node", "牵头节点"),
    "op.col.researchers": ("Researchers", "研究人员"),
    "op.jobs.title": ("Jobs", "任务"),
    "op.jobs.intro": ("Every researcher's jobs and their states. Results are sealed to the "
                      "researcher and a node's reason for a refusal too: neither is shown "
                      "here, because the coordinator cannot read them.",
                      "全部研究人员的任务及其状态。结果以及节点拒绝任务的理由均密封给研究人员本人，"
                      "协调方无法读取，因此此处不显示。"),
    "op.col.job": ("Job", "任务"),
    "op.col.researcher": ("Researcher", "研究人员"),
    "op.col.type": ("Type", "类型"),
    "op.col.phase": ("Phase", "阶段"),
    "op.col.created": ("Created (UTC)", "创建时间（UTC）"),
    "op.col.updated": ("Updated (UTC)", "更新时间（UTC）"),
    "op.col.contributors": ("Contributors", "贡献节点"),
    "op.col.note": ("Coordinator note", "协调方说明"),
    "op.revocations.title": ("Revocations", "证书吊销"),
    "op.revocations.intro": ("The CA's revocation list as the coordinator enforces it: it "
                             "refuses every call made with these certificates, closes their "
                             "task streams and forwards the list to every node. Names are "
                             "those of the certificates the coordinator has seen.",
                             "协调方正在执行的 CA 证书吊销列表：协调方拒绝这些证书发起的一切调用、"
                             "关闭其任务流，并把该列表转发给每个节点。名称取自协调方见过的证书。"),
    "op.revocations.crl": ("CRL number {n}, signed {signed} UTC; next update due {next} UTC.",
                           "CRL 编号 {n}，签发于 {signed}（UTC）；"
                           "下次更新应在 {next}（UTC）之前。"),
    "op.revocations.no_crl": ("The coordinator holds no CRL: no certificate is revoked.",
                              "协调方没有 CRL：没有被吊销的证书。"),
    "op.col.serial": ("Serial", "序列号"),
    "op.col.name": ("Name", "名称"),
    "op.col.role": ("Role", "角色"),
    "op.col.revoked": ("Revoked (UTC)", "吊销时间（UTC）"),
    "op.not_seen": ("(not seen by the coordinator)", "（协调方未见过）"),
    "op.role.node": ("node", "节点"),
    "op.role.researcher": ("researcher", "研究人员"),
    "op.role.operator": ("operator", "运营方"),
    "op.role.coordinator": ("coordinator", "协调方"),
    "op.filter.status": ("Status", "状态"),
    "op.filter.all": ("all", "全部"),
    "op.filter.apply": ("Filter", "筛选"),
})

# The states the pages show, translated (values from scifed.states).
i18n.register({
    **{f"op.job.{s.value}": en_zh for s, en_zh in {
        JobStatus.SUBMITTED: ("submitted", "已提交"), JobStatus.RUNNING: ("running", "运行中"),
        JobStatus.DONE: ("done", "已完成"), JobStatus.FAILED: ("failed", "失败"),
        JobStatus.CANCELLED: ("cancelled", "已取消"),
        JobStatus.INTERRUPTED: ("interrupted", "已中断"),
        JobStatus.WITHHELD: ("withheld", "已扣留")}.items()},
    **{f"op.study.{s.value}": en_zh for s, en_zh in {
        StudyStatus.PENDING: ("pending", "待接受"), StudyStatus.KEYING: ("keying", "生成密钥中"),
        StudyStatus.ACTIVE: ("active", "进行中")}.items()},
    "op.member.invited": ("invited", "已邀请"),
    "op.member.accepted": ("accepted", "已接受"),
    "op.member.declined": ("declined", "已拒绝"),
})
