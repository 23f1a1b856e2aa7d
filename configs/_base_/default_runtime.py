default_scope = 'decq_plugin'
