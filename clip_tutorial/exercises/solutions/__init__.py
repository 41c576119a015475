"""Solutions of the book's exercises, one module per chapter and one function per exercise.

Read one with ``clip_tutorial.exercises.show_solution("ch1.cosine_similarity")`` once you have
tried: the notebooks do not print them. Explained in Chapter 1 (section "Summary and exercises").
"""
