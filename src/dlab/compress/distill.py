"""Knowledge distillation (Hinton et al. 2015): a small student learns from a trained teacher.

    L = α · KL(softmax(z_t / T) ‖ softmax(z_s / T)) · T²  +  (1 − α) · CE(z_s, y)

The temperature T softens both distributions so the student learns how the teacher ranks the
wrong classes; T² keeps the soft term's gradients on the scale of the hard term's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlab.training.metrics import forward


class DistillationLoss(nn.Module):
    """α·T²·KL(teacher ‖ student) + (1 − α)·CE; plain CE where the inputs are not given (validation)."""

    needs_inputs = True

    def __init__(
        self, teacher: nn.Module, hard_loss: nn.Module, alpha: float = 0.5, temperature: float = 4.0
    ):
        super().__init__()
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.hard_loss, self.alpha, self.temperature = hard_loss, alpha, temperature

    def forward(
        self, student_logits: torch.Tensor, targets: torch.Tensor, inputs=None
    ) -> torch.Tensor:
        hard = self.hard_loss(student_logits, targets)
        if inputs is None:
            return hard
        with torch.no_grad():
            teacher_logits = forward(self.teacher, inputs)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        return self.alpha * soft * t * t + (1 - self.alpha) * hard
