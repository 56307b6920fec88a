"""The researcher console's interface text, English and Chinese (scifed.web.i18n)."""

from __future__ import annotations

from scifed.web import i18n

i18n.register({
    "ui.title": ("Researcher console", "研究者控制台"),
    "ui.nav.catalog": ("Catalog", "数据目录"),
    "ui.nav.submit": ("New job", "新建作业"),
    "ui.nav.jobs": ("My jobs", "我的作业"),
    "ui.nav.access": ("My data access", "我的数据访问"),
    # delivery
    "ui.access.request": ("Request access", "申请访问"),
    "ui.access.request_title": ("Request access to {title}", "申请访问 {title}"),
    "ui.access.method": ("Delivery method", "交付方式"),
    "ui.access.method.download": ("download (the file, or a column subset)",
                                  "下载（整个文件或部分字段）"),
    "ui.access.method.in_node_service": ("queries inside the node", "节点内查询服务"),
    "ui.access.none": ("This dataset is not delivered over the network (its grade and "
                       "category allow no download or in-node service).",
                       "此数据集不通过网络交付（其分级与类别不允许下载或节点内服务）。"),
    "ui.access.purpose": ("Purpose: what you will use the data for", "用途：数据将用于什么"),
    "ui.access.columns": ("Columns (none chosen: the whole file)", "字段（不选：整个文件）"),
    "ui.access.format": ("Format of a column subset", "部分字段的文件格式"),
    "ui.access.study": ("Study (needed for CONDITIONAL data)", "研究项目（CONDITIONAL 数据需要）"),
    "ui.access.conditions": ("Conditions of use: accept each", "使用条件：请逐项接受"),
    "ui.access.grants": ("My data access", "我的数据访问"),
    "ui.access.unreached": ("Nodes not reached: {nodes}", "未能连接的节点：{nodes}"),
    "ui.access.new": ("Request sent: grant {grant}", "申请已提交：授权 {grant}"),
    "ui.access.download": ("Download", "下载"),
    "ui.access.downloading": ("Download of grant {grant}", "授权 {grant} 的下载"),
    "ui.access.verified": ("Verified: the file's sha256 matches the one its node signed",
                           "已验证：文件的 sha256 与节点签名的一致"),
    "ui.access.saved": ("Saved on this machine as", "已保存在本机"),
    "ui.access.save": ("Save a copy from the browser", "通过浏览器另存一份"),
    "ui.access.resume": ("Resume the download", "继续下载"),
    "ui.access.not_started": ("No download of this grant has started here.",
                              "本机尚未开始下载此授权。"),
    # queries inside the node
    "ui.query.open": ("Query", "查询"),
    "ui.query.title": ("Queries inside node {node}: {dataset}", "在节点 {node} 内查询：{dataset}"),
    "ui.query.about": ("One SELECT over table data (the granted columns: {columns}). The "
                       "query runs inside the node; its answer is sealed to you and opened "
                       "on this machine.",
                       "对表 data 的一条 SELECT 语句（已授权字段：{columns}）。查询在节点内执行；"
                       "结果以您的密钥加密，仅在本机解开。"),
    "ui.query.sql": ("Query (SQL)", "查询语句（SQL）"),
    "ui.query.run": ("Run the query", "执行查询"),
    "ui.query.refused": ("The node refused the query", "节点拒绝了该查询"),
    "ui.query.answer": ("Answer", "结果"),
    "ui.query.rows": ("{n} rows ({mode})", "{n} 行（{mode}）"),
    "ui.query.mode.rows": ("rows", "明细行"),
    "ui.query.mode.aggregate": ("aggregates, each group of at least {k} rows",
                                "汇总结果，每组至少 {k} 行"),
    "ui.query.withheld": ("{n} groups withheld: fewer rows than the dataset's minimum count",
                          "{n} 个分组未返回：行数少于该数据集的最小计数"),
    "ui.query.empty": ("The answer has no rows.", "结果中没有行。"),
    "ui.query.not_granted": ("This grant is {state}: it answers no query.",
                             "此授权状态为{state}，不能查询。"),
    "ui.col.grant": ("Grant", "授权"),
    "ui.col.dataset": ("Dataset", "数据集"),
    "ui.col.method": ("Method", "方式"),
    "ui.col.columns": ("Columns", "字段"),
    "ui.col.expires": ("Expires", "到期"),
    "ui.col.note": ("Note", "说明"),
    "ui.all_columns": ("all", "全部"),
    # catalog
    "ui.catalog.title": ("Federated catalog", "联邦数据目录"),
    "ui.catalog.search": ("Search", "搜索"),
    "ui.catalog.query": ("Words in the title, description, keywords or columns",
                         "标题、描述、关键词或字段中的词"),
    "ui.catalog.keyword": ("Keyword", "关键词"),
    "ui.catalog.found": ("{n} datasets", "{n} 个数据集"),
    "ui.catalog.clear": ("Clear filters", "清除筛选"),
    "ui.catalog.counts_note": ("Counts are over the datasets that match the words.",
                               "计数针对与搜索词匹配的数据集。"),
    "ui.facet.grade": ("Grade", "分级"),
    "ui.facet.category": ("Sharing category", "共享类别"),
    "ui.facet.node": ("Node", "节点"),
    "ui.facet.quality": ("Quality grade", "质量等级"),
    "ui.facet.job_type": ("Job type admitted", "允许的作业类型"),
    "ui.facet.job_type_note": ("By the default policy of the dataset's grade and category; "
                               "a node may tighten it.",
                               "按数据集分级与类别的默认策略；节点可进一步收紧。"),
    "ui.col.title": ("Title", "标题"),
    "ui.col.node": ("Node", "节点"),
    "ui.col.platform": ("Platform", "平台"),
    "ui.col.grade": ("Grade", "分级"),
    "ui.col.category": ("Category", "类别"),
    "ui.col.rows": ("Rows", "行数"),
    "ui.col.quality": ("Quality", "质量"),
    "ui.stub": ("stub", "存根"),
    # dataset
    "ui.dataset.description": ("Description", "描述"),
    "ui.dataset.facts": ("About this dataset", "数据集概况"),
    "ui.dataset.quality": ("Quality (AI-readiness scorecard)", "质量（AI 就绪度评分）"),
    "ui.dataset.no_quality": ("The node has published no quality report.",
                              "该节点尚未发布质量报告。"),
    "ui.dataset.score": ("Score {score} of 100, grade {grade}", "得分 {score}/100，等级 {grade}"),
    "ui.dataset.dimension": ("Dimension", "维度"),
    "ui.dataset.fields": ("Fields", "字段"),
    "ui.dataset.stub_note": ("A catalog stub: the node publishes no description or fields "
                             "for this CLOSED dataset.",
                             "目录存根：该节点不公开此 CLOSED 数据集的描述或字段。"),
    "ui.dataset.exports": ("Metadata downloads", "元数据下载"),
    "ui.dataset.use": ("Use in a job", "用于作业"),
    "ui.dataset.job_types": ("Job types admitted by default", "默认允许的作业类型"),
    "ui.field.name": ("Name", "名称"),
    "ui.field.type": ("Type", "类型"),
    "ui.field.unit": ("Unit", "单位"),
    "ui.field.role": ("Role", "角色"),
    "ui.field.missing": ("Missing", "缺失"),
    "ui.field.min": ("Min", "最小值"),
    "ui.field.max": ("Max", "最大值"),
    "ui.field.mean": ("Mean", "均值"),
    "ui.fact.grade": ("Sensitivity grade", "敏感分级"),
    "ui.fact.category": ("Sharing category", "共享类别"),
    "ui.fact.node": ("Node", "节点"),
    "ui.fact.platform": ("Platform", "平台"),
    "ui.fact.rows": ("Rows", "行数"),
    "ui.fact.keywords": ("Keywords", "关键词"),
    "ui.fact.license": ("Licence", "许可"),
    "ui.fact.version": ("Version", "版本"),
    "ui.fact.delivery": ("Delivery methods", "交付方式"),
    "ui.fact.conditions": ("Conditions of use", "使用条件"),
    "ui.access.A": ("automatic", "自动"),
    "ui.access.R": ("after approval", "需审批"),
    # job form
    "ui.form.title": ("Submit a federated job", "提交联邦作业"),
    "ui.form.study": ("Study", "研究项目"),
    "ui.form.type": ("Job type", "作业类型"),
    "ui.form.datasets": ("Datasets (one per node)", "数据集（每个节点一个）"),
    "ui.form.no_datasets": ("No study of yours has datasets attached yet.",
                            "您的研究项目尚未关联数据集。"),
    "ui.form.filter": ("Row filter (optional)", "行筛选（可选）"),
    "ui.form.params": ("Parameters as YAML (the job type's section; a field filled in "
                       "above replaces the same key)",
                       "以 YAML 填写的参数（作业类型的配置段；上方已填写的字段会替换同名键）"),
    "ui.form.parameters": ("Parameters", "参数"),
    "ui.form.fields_of": ("Parameters of a {type} job (fields marked * are required; a "
                          "blank field takes its default).",
                          "{type} 作业的参数（带 * 的为必填；留空则取默认值）。"),
    "ui.form.default": ("(default: {value})", "（默认：{value}）"),
    "ui.form.comma": ("Comma-separated.", "以逗号分隔。"),
    "ui.form.advanced": ("Advanced: parameters as YAML", "高级：以 YAML 填写参数"),
    "ui.form.advanced_only": ("Set in the advanced YAML box only: {names}.",
                              "仅可在高级 YAML 框中设置：{names}。"),
    "ui.form.problems": ("{n} problem(s): each is shown under its field; nothing was sent.",
                         "{n} 个问题：已在各字段下方列出；未提交任何内容。"),
    "ui.form.check": ("Check", "检查"),
    "ui.form.valid": ("The job is valid: submit it.", "作业有效，可以提交。"),
    "ui.form.yaml": ("As job.yaml", "对应的 job.yaml"),
    # jobs
    "ui.jobs.title": ("My jobs", "我的作业"),
    "ui.jobs.all": ("All states", "全部状态"),
    "ui.jobs.filter": ("Show", "显示"),
    "ui.col.job": ("Job", "作业"),
    "ui.col.study": ("Study", "研究项目"),
    "ui.col.type": ("Type", "类型"),
    "ui.col.phase": ("Phase", "阶段"),
    "ui.col.created": ("Created", "创建时间"),
    "ui.col.updated": ("Updated", "更新时间"),
    "ui.col.detail": ("Detail", "详情"),
    "ui.job.title": ("Job {job}", "作业 {job}"),
    "ui.job.per_node": ("Per node", "各节点"),
    "ui.job.rounds": ("Round {round} of {rounds}", "第 {round}/{rounds} 轮"),
    "ui.job.live": ("Updating live.", "实时更新中。"),
    "ui.job.failed": ("The job failed", "作业失败"),
    "ui.job.see_result": ("Open the result", "查看结果"),
    "ui.job.metrics": ("Pooled metrics per round", "每轮汇总指标"),
    "ui.col.round": ("Round", "轮次"),
    # result
    "ui.result.title": ("Result of job {job}", "作业 {job} 的结果"),
    "ui.result.verified": ("Verified", "已验证"),
    "ui.result.tables": ("Tables", "表格"),
    "ui.result.plots": ("Plots", "图表"),
    "ui.result.downloads": ("Downloads", "下载"),
    "ui.result.all_files": ("All files (zip)", "全部文件（zip）"),
    "ui.result.conventions": ("Conventions", "约定"),
    # states
    "ui.status.submitted": ("submitted", "已提交"),
    "ui.status.running": ("running", "运行中"),
    "ui.status.done": ("done", "已完成"),
    "ui.status.failed": ("failed", "失败"),
    "ui.status.cancelled": ("cancelled", "已取消"),
    "ui.status.interrupted": ("interrupted", "已中断"),
    "ui.status.pending": ("pending", "等待中"),
    "ui.status.waiting": ("waiting for approval", "等待审批"),
    "ui.status.granted": ("granted", "已授权"),
    "ui.status.denied": ("denied", "已拒绝"),
    "ui.status.expired": ("expired", "已过期"),
    "ui.status.revoked": ("revoked", "已撤销"),
    "ui.status.withheld": ("withheld at output review", "输出审核未放行"),
    "ui.phase.in_output_review": ("in output review", "输出审核中"),
    "ui.phase.note.in_output_review": (
        "The pooled result waits for the data officer of a contributing node to release it "
        "(the policy of its dataset asks for output review).",
        "汇总结果正在等待贡献节点的数据官放行（其数据集的策略要求输出审核）。"),
    "ui.login.started": ("Researcher console for {name}", "{name} 的研究者控制台"),
})


def phase_text(t: i18n.Translator, name: str, shown: str) -> str:
    """A job's phase in the page's language where this console has words for its name
    (``in output review``), else as the coordinator shows it (``round 2/5``)."""
    key = "ui.phase." + name.replace(" ", "_")
    return t(key) if key in i18n.catalog_keys() else shown


def phase_note(t: i18n.Translator, name: str) -> str:
    """What a phase means for the researcher, where there is more to say than its name."""
    key = "ui.phase.note." + name.replace(" ", "_")
    return t(key) if key in i18n.catalog_keys() else ""


def state_text(t: i18n.Translator, state: str) -> str:
    """A job's or task's state in the page's language; a state this console does not
    know yet (one a newer coordinator adds) shows as its own words."""
    key = f"ui.status.{state}"
    return t(key) if key in i18n.catalog_keys() else state.replace("_", " ")
