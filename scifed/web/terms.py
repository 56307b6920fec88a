"""Words the node and the coordinator send as data — a state (``pending``,
``withheld``), a delivery method, a policy value — in English and Chinese, for every
console: :meth:`scifed.web.i18n.Translator.term` shows one in the page's language
(``term.<word>``). One word has one entry here, whichever console shows it; where the
researcher reads a word differently from the officer who decides it (a result the officer
withholds is, to the researcher, withheld at output review), the researcher's wording is
a ``researcher.<word>`` entry, asked for with ``t.term(word, "researcher")``, which falls
back to the shared word."""

from __future__ import annotations

from scifed.web import i18n

TERMS: dict[str, tuple[str, str]] = {
    # states of approvals, reviews, grants, alerts, studies
    "pending": ("pending", "待处理"), "approved": ("approved", "已批准"),
    "denied": ("denied", "已拒绝"), "expired": ("expired", "已过期"),
    "withdrawn": ("withdrawn", "已撤回"), "released": ("released", "已发布"),
    "withheld": ("withheld", "不予发布"), "granted": ("granted", "已授权"),
    "revoked": ("revoked", "已撤销"), "open": ("open", "未解除"),
    "cleared": ("cleared", "已解除"), "keying": ("keying", "生成密钥中"),
    "active": ("active", "进行中"), "accepted": ("accepted", "已接受"),
    "declined": ("declined", "已谢绝"),
    # states of a researcher's jobs and tasks (scifed/states.py)
    "submitted": ("submitted", "已提交"), "running": ("running", "运行中"),
    "done": ("done", "已完成"), "failed": ("failed", "失败"),
    "cancelled": ("cancelled", "已取消"), "interrupted": ("interrupted", "已中断"),
    "waiting": ("waiting for approval", "等待审批"),
    # the policy's decisions and access words
    "allow": ("allow", "允许"), "approval": ("approval", "需审批"),
    "deny": ("deny", "拒绝"), "automatic": ("automatic", "自动"),
    "auto": ("auto", "自动"),
    "forbidden": ("forbidden", "禁止"), "True": ("yes", "是"), "False": ("no", "否"),
    # delivery methods and kinds
    "download": ("download", "下载"), "in_node_service": ("in-node service", "节点内服务"),
    "metadata_only": ("metadata only", "仅元数据"),
    "offline_transfer": ("offline transfer", "线下交付"), "offline": ("offline", "线下"),
    "answer": ("query answer", "查询结果"),
    # the researcher's signed calls under a grant (scifed/delivery.py)
    "manifest": ("manifest", "清单"), "chunk": ("chunk", "数据块"), "query": ("query", "查询"),
    # catalog publication modes
    "full": ("full", "完整"), "coarse": ("coarse", "粗化"), "stub": ("stub", "仅存根"),
    "none": ("none", "不发布"),
    # scorecard statuses
    "pass": ("pass", "通过"), "warn": ("warn", "警告"), "fail": ("fail", "未通过"),
    "n/a": ("n/a", "不适用"),
}

# the researcher's own wording of a word, where it differs from the officer's
RESEARCHER: dict[str, tuple[str, str]] = {
    "pending": ("pending", "等待中"),
    "withheld": ("withheld at output review", "输出审核未放行"),
}

i18n.register({f"term.{word}": pair for word, pair in TERMS.items()})
i18n.register({f"researcher.{word}": pair for word, pair in RESEARCHER.items()})
