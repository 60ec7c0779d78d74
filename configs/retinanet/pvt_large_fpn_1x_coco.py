# RetinaNet + PVT-Large, 1x. As the official `retinanet_pvt_l_fpn_1x_coco.py`: mixed precision
# (there apex O1 with its dynamic loss scale; here mmengine's AmpOptimWrapper, fp16 with a
# dynamic loss scale, so a CUDA GPU is needed) and no stochastic depth (the official `pvt_large`
# detection backbone leaves drop-path at 0).
_base_ = './pvt_tiny_fpn_1x_coco.py'
model = dict(backbone=dict(arch='large', drop_path_rate=0.0,
                           init_cfg=dict(checkpoint={{_base_.pvt_pretrained.large}})))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
