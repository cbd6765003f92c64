"""Real-time recommendations on Faust tables (see ``recommender.streams`` and ``recommender.engine``)."""
