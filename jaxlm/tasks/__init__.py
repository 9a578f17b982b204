"""What each task supplies to the loop: batches, loss, metrics."""
