-- The coordinator schema that create_all made at commit efc9503 (postgresql),
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
	public_context BYTEA, 
	PRIMARY KEY (study_id), 
	UNIQUE (name)
);

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
	updated_ms BIGINT NOT NULL, 
	search_text TEXT NOT NULL, 
	PRIMARY KEY (record_id), 
	FOREIGN KEY(node_name) REFERENCES nodes (name) ON DELETE CASCADE
);

CREATE INDEX ix_records_node_name ON records (node_name);

CREATE INDEX ix_records_category ON records (category);

CREATE INDEX ix_records_platform ON records (platform);

CREATE INDEX ix_records_grade ON records (grade);

ALTER TABLE records ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED;

CREATE INDEX IF NOT EXISTS ix_records_tsv ON records USING GIN (tsv);

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
	sealed_secret BYTEA NOT NULL, 
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
	error TEXT NOT NULL, 
	contributors JSON NOT NULL, 
	created_ms BIGINT NOT NULL, 
	updated_ms BIGINT NOT NULL, 
	sealed_result BYTEA, 
	PRIMARY KEY (job_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);

CREATE INDEX ix_jobs_researcher ON jobs (researcher);

CREATE INDEX ix_jobs_study_id ON jobs (study_id);

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
	updated_ms BIGINT NOT NULL, 
	PRIMARY KEY (job_id, node_name, phase), 
	FOREIGN KEY(job_id) REFERENCES jobs (job_id) ON DELETE CASCADE
);
