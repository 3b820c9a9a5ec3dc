"""Beta status lives in each profile's `auth0.beta`; the table that copied it was read by nothing."""


def up(migrator, db):
    db.execute_sql('DROP TABLE "beta_statuses"')


def down(migrator, db):
    db.execute_sql('CREATE TABLE "beta_statuses" ("user_id" VARCHAR(255) NOT NULL PRIMARY KEY '
                   'REFERENCES "users" ("id") ON DELETE CASCADE, "vision" TEXT NOT NULL)')
