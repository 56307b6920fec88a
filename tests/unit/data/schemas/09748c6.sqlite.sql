-- The coordinator schema that create_all made at commit 09748c6 (sqlite),
-- before schema migrations.

CREATE TABLE nodes (
	name VARCHAR NOT NULL, 
	platform VARCHAR NOT NULL, 
	software_version VARCHAR NOT NULL, 
	cert_fingerprint VARCHAR NOT NULL, 
	connected BOOLEAN NOT NULL, 
	last_seen_ms BIGINT, 
	seal_claim JSON, 
	PRIMARY KEY (name)
);

CREATE TABLE studies (
	study_id VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	purpose TEXT NOT NULL, 
	min_nodes BIGINT NOT NULL, 
	status VARCHAR NOT NULL, 
	created_by VARCHAR NOT NULL, 
	created_ms BIGINT NOT NULL, 
	key_version BIGINT NOT NULL, 
	lead_node VARCHAR, 
	public_context BLOB, 
	PRIMARY KEY (study_id), 
	UNIQUE (name)
);

CREATE TABLE audit_heads (
	node_name VARCHAR NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR NOT NULL, 
	received_ms BIGINT NOT NULL, 
	PRIMARY KEY (node_name, seq)
);

CREATE TABLE coordinator_audit (
	seq BIGINT NOT NULL, 
	ts_ms BIGINT NOT NULL, 
	actor VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	details TEXT NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq)
);

CREATE INDEX ix_coordinator_audit_subject ON coordinator_audit (subject);

CREATE INDEX ix_coordinator_audit_action ON coordinator_audit (action);

CREATE TABLE records (
	record_id VARCHAR NOT NULL, 
	node_name VARCHAR NOT NULL, 
	record_json JSON NOT NULL, 
	title VARCHAR NOT NULL, 
	grade VARCHAR NOT NULL, 
	category VARCHAR NOT NULL, 
	platform VARCHAR NOT NULL, 
	stub BOOLEAN NOT NULL, 
	record_count BIGINT, 
	quality_grade VARCHAR(1), 
	updated_ms BIGINT NOT NULL, 
	search_text TEXT NOT NULL, 
	PRIMARY KEY (record_id), 
	FOREIGN KEY(node_name) REFERENCES nodes (name) ON DELETE CASCADE
);

CREATE INDEX ix_records_grade ON records (grade);

CREATE INDEX ix_records_category ON records (category);

CREATE INDEX ix_records_quality_grade ON records (quality_grade);

CREATE INDEX ix_records_node_name ON records (node_name);

CREATE INDEX ix_records_platform ON records (platform);

CREATE TABLE study_members (
	study_id VARCHAR NOT NULL, 
	node_name VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	datasets JSON NOT NULL, 
	answered_ms BIGINT, 
	PRIMARY KEY (study_id, node_name), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE, 
	FOREIGN KEY(node_name) REFERENCES nodes (name)
);

CREATE TABLE study_researchers (
	study_id VARCHAR NOT NULL, 
	researcher VARCHAR NOT NULL, 
	PRIMARY KEY (study_id, researcher), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE
);

CREATE TABLE study_key_shares (
	study_id VARCHAR NOT NULL, 
	version BIGINT NOT NULL, 
	node_name VARCHAR NOT NULL, 
	sealed_secret BLOB NOT NULL, 
	PRIMARY KEY (study_id, version, node_name), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id) ON DELETE CASCADE
);

CREATE TABLE jobs (
	job_id VARCHAR NOT NULL, 
	study_id VARCHAR NOT NULL, 
	researcher VARCHAR NOT NULL, 
	job_type VARCHAR NOT NULL, 
	spec JSON NOT NULL, 
	seal_claim JSON NOT NULL, 
	status VARCHAR NOT NULL, 
	phase VARCHAR NOT NULL, 
	phase_round INTEGER, 
	phase_rounds INTEGER, 
	error TEXT NOT NULL, 
	contributors JSON NOT NULL, 
	created_ms BIGINT NOT NULL, 
	updated_ms BIGINT NOT NULL, 
	sealed_result BLOB, 
	PRIMARY KEY (job_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);

CREATE INDEX ix_jobs_study_id ON jobs (study_id);

CREATE INDEX ix_jobs_researcher ON jobs (researcher);

CREATE TABLE record_terms (
	record_id VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	value_norm VARCHAR NOT NULL, 
	PRIMARY KEY (record_id, kind, value_norm), 
	FOREIGN KEY(record_id) REFERENCES records (record_id) ON DELETE CASCADE
);

CREATE INDEX ix_record_terms_kind_value ON record_terms (kind, value_norm);

CREATE TABLE job_tasks (
	job_id VARCHAR NOT NULL, 
	node_name VARCHAR NOT NULL, 
	phase VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	detail TEXT NOT NULL, 
	sealed_reason BLOB, 
	updated_ms BIGINT NOT NULL, 
	PRIMARY KEY (job_id, node_name, phase), 
	FOREIGN KEY(job_id) REFERENCES jobs (job_id) ON DELETE CASCADE
);

CREATE TABLE job_progress (
	job_id VARCHAR NOT NULL, 
	round INTEGER NOT NULL, 
	sealed BLOB NOT NULL, 
	created_ms BIGINT NOT NULL, 
	PRIMARY KEY (job_id, round), 
	FOREIGN KEY(job_id) REFERENCES jobs (job_id) ON DELETE CASCADE
);

CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(record_id UNINDEXED, title, keywords, subjects, columns, description, tokenize='trigram');
